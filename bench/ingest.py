"""Ingest through the HTTP API beside direct ``Publisher`` calls, and what one worker delivers.

``python -m bench.ingest [EVENTS] [CLIENTS] [ROUNDS] [--baseline REV]``: per round, side by side
on one Redis,

- **api**: CLIENTS processes each POST EVENTS/CLIENTS events to one ``reseller-webhooks api``
  process, one event per request over a kept-alive connection, with a producer token;
- **direct**: CLIENTS processes each call ``Publisher.publish`` EVENTS/CLIENTS times;
- **worker**: one worker delivers EVENTS preloaded events to one subscriber;
- with ``--baseline REV``, **api_baseline**: the same as **api** with the ``producers/`` and
  ``worker/`` of git revision REV, right after it (so two versions compare under one load).

Prints events/s, client-side latency p50/p99, CPU ms per event of the process doing the work
(the API process; the publishing processes; the worker), and the ratio the issue sets a target
for: events one API core ingests per CPU second over deliveries one worker core makes per CPU
second (``worker_cpu_ms_each / api_cpu_ms_each``). Then the medians over rounds.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.harness import Processes, cpu_seconds, wait_for
from bench.redis_cpu import extract
from reseller_webhooks.worker.devserver.redis_server import free_port
from reseller_webhooks.worker.devserver.samples import sample_user

TOKEN = "bench-" + "k" * 26  # a throwaway producer token, on loopback only
EVENT = "reseller.user.created"


def client(mode: str, target: str, count: int, name: str, start_at: float) -> None:
    """One publishing process: prints each request's latency, its own CPU and its span."""
    user = sample_user()
    latencies: list[float] = []
    if mode == "api":
        host, port = target.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

        def publish(data: dict[str, Any]) -> None:
            body = json.dumps({"event": EVENT, "data": data})
            connection.request("POST", "/v1/events", body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 202:
                raise SystemExit(f"api answered {response.status}")

    else:
        from reseller_webhooks.producers.publisher import Publisher
        from reseller_webhooks.producers.settings import ProducerSettings

        publisher = Publisher(ProducerSettings(redis_url=target))
        publisher.ping()

        def publish(data: dict[str, Any]) -> None:
            publisher.publish(EVENT, data)

    publish({**user, "id": f"{name}-warm"})  # connected and warm before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    cpu, began_at = time.process_time(), time.time()
    for n in range(count):
        began = time.perf_counter()
        publish({**user, "id": f"{name}-{n}"})
        latencies.append((time.perf_counter() - began) * 1000)
    cpu_s, ended_at = time.process_time() - cpu, time.time()
    print(json.dumps({"ms": latencies, "cpu_s": cpu_s, "span": [began_at, ended_at]}))


def _clients(p: Processes, mode: str, target: str, events: int, clients: int) -> dict[str, Any]:
    """Run the clients together; their latencies, the rate, and their own CPU per event."""
    each = events // clients
    start_at = time.time() + 2 + clients  # every client started and connected by then
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.ingest",
                "client",
                mode,
                target,
                str(each),
                f"c{n}",
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            env=p.env(),
        )
        for n in range(clients)
    ]
    outputs = [json.loads(child.communicate(timeout=600)[0]) for child in children]
    # From the first client's first request to the last one's last answer, by their own clocks.
    seconds = max(o["span"][1] for o in outputs) - min(o["span"][0] for o in outputs)
    ms = [m for out in outputs for m in out["ms"]]
    return {
        "events": len(ms),
        "per_s": round(len(ms) / seconds, 1),
        "p50_ms": round(scenarios.percentile(ms, 0.5), 3),
        "p99_ms": round(scenarios.percentile(ms, 0.99), 3),
        "client_cpu_ms_each": round(sum(o["cpu_s"] for o in outputs) * 1000 / len(ms), 3),
    }


def api_round(p: Processes, events: int, clients: int, code: Path | None = None) -> dict[str, Any]:
    """The API of this checkout, or of the code extracted at ``code`` (``--baseline``)."""
    p.flush()
    port = free_port()
    env = p.env(WEBHOOKS_API_TOKENS=f"bench:{TOKEN}")
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    api = p.start(
        [sys.executable, "-m", "reseller_webhooks.worker", "api", "--port", str(port)],
        env,
        "api",
    )
    log = p.directory / "api.log"
    try:
        wait_for(lambda: "api on http://" in log.read_text(), 60, "the API listening")
        cpu = cpu_seconds(api.pid)
        figures = _clients(p, "api", f"127.0.0.1:{port}", events, clients)
        used_ms = (cpu_seconds(api.pid) - cpu) * 1000
        # The clients' warm-up requests are in the API's CPU too: a handful among thousands.
        figures["api_cpu_ms_each"] = round(used_ms / figures["events"], 3)
    finally:
        p.stop(api)
    return figures


def direct_round(p: Processes, events: int, clients: int) -> dict[str, Any]:
    p.flush()
    return _clients(p, "direct", p.redis.url, events, clients)


def one_round(
    p: Processes, events: int, clients: int, baseline: Path | None = None
) -> dict[str, Any]:
    row = {
        "api": api_round(p, events, clients),
        **({"api_baseline": api_round(p, events, clients, baseline)} if baseline else {}),
        "direct": direct_round(p, events, clients),
        "worker": scenarios.ours_throughput(
            p, scenarios.Sizes(events=events, pending=1, lateness_events=1), 1
        ),
    }
    row["ratios"] = {
        "api_per_core/worker_per_core": round(
            row["worker"]["worker_cpu_ms_each"] / row["api"]["api_cpu_ms_each"], 2
        ),
        "api/direct events per s": round(row["api"]["per_s"] / row["direct"]["per_s"], 2),
    }
    if baseline:
        then = row["api_baseline"]
        row["ratios"]["baseline_api_per_core/worker_per_core"] = round(
            row["worker"]["worker_cpu_ms_each"] / then["api_cpu_ms_each"], 2
        )
        row["ratios"]["api_cpu_each current/baseline"] = round(
            row["api"]["api_cpu_ms_each"] / then["api_cpu_ms_each"], 3
        )
        row["ratios"]["api events per s current/baseline"] = round(
            row["api"]["per_s"] / then["per_s"], 3
        )
    return row


def describe(row: dict[str, Any]) -> str:
    api, direct, worker = row["api"], row["direct"], row["worker"]
    then = row.get("api_baseline")
    return (
        (
            f"baseline api {then['per_s']:.0f}/s p50 {then['p50_ms']:.2f} ms p99"
            f" {then['p99_ms']:.2f} ms ({then['api_cpu_ms_each']:.3f} ms API CPU each); "
            if then
            else ""
        )
        + f"api {api['per_s']:.0f}/s p50 {api['p50_ms']:.2f} ms p99 {api['p99_ms']:.2f} ms"
        f" ({api['api_cpu_ms_each']:.3f} ms API CPU each); direct {direct['per_s']:.0f}/s"
        f" p50 {direct['p50_ms']:.2f} ms p99 {direct['p99_ms']:.2f} ms"
        f" ({direct['client_cpu_ms_each']:.3f} ms CPU each); worker {worker['per_s']:.0f}/s"
        f" ({worker['worker_cpu_ms_each']:.3f} ms CPU each); "
        + ", ".join(f"{k} {v}" for k, v in row["ratios"].items())
    )


def main(
    events: int = 4000, clients: int = 4, rounds: int = 3, baseline: str | None = None
) -> None:
    """With ``baseline`` (a git revision), each round also runs that revision's API, between
    this one's and the direct calls (``--baseline REV``)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="rw-ingest-") as tmp:
        p = Processes(Path(tmp))
        code = extract(baseline, Path(tmp) / "baseline-code") if baseline else None
        try:
            for n in range(rounds):
                rows.append(one_round(p, events, clients, code))
                print(f"round {n + 1}: {describe(rows[-1])}", flush=True)
        finally:
            p.close()
    for key in rows[0]["ratios"]:
        print(f"median {key}: {statistics.median(r['ratios'][key] for r in rows):.2f}")
    print(f"cores: {len(os.sched_getaffinity(0))}; load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], float(sys.argv[6]))
    else:
        arguments = sys.argv[1:]
        rev = None
        if "--baseline" in arguments:
            at = arguments.index("--baseline")
            rev = arguments[at + 1]
            del arguments[at : at + 2]
        main(*map(int, arguments[:3]), baseline=rev)
