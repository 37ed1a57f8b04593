"""Redis CPU per delivery of the records' scripts: drain, claim and finish, nothing else.

``python -m bench.redis_cpu [--rounds 9] [--deliveries 2000] [--baseline REV]``

A private redis-server; each round publishes events, resets ``INFO commandstats``, then drives
``records.store.Store`` directly as a worker does (drain; claim; finish and claim again in one
round trip; every attempt delivered) and reports the ``usec`` of EVALSHA and EVAL per delivery.
With ``--baseline REV`` the same rounds also run against the ``producers/`` and ``worker/`` of
git revision REV (extracted to a temporary directory put first on ``PYTHONPATH``), interleaved
with the working tree's, alternating which goes first; it reports both medians, their ratio and
the median of each round's ratio (the two halves of a round see about the same machine load).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

#: Half the events' users get the ordered subscriber's chain treatment, each user once per round.
ROUTES_SPEC = {"plain": (False, False), "ordered": (True, False)}
#: As the worker's defaults: ``deliver_chunk`` and a subscriber's ``max_in_flight``.
MOST, BOUND = 50, 4
LEASE_MS = 60_000
SCRIPT_CMDS = ("cmdstat_evalsha", "cmdstat_eval")


def one_round(url: str, deliveries: int) -> dict[str, Any]:
    """Runs in a child process, against whichever ``reseller_webhooks`` it imports."""
    import redis

    from reseller_webhooks.producers.publisher import Publisher
    from reseller_webhooks.producers.settings import ProducerSettings
    from reseller_webhooks.producers.wire import Keys
    from reseller_webhooks.worker.devserver.samples import sample_user
    from reseller_webhooks.worker.records import store as records
    from reseller_webhooks.worker.records.store import Finish, Route, Store

    client = redis.Redis.from_url(url)
    client.flushall()
    subs = [Route(sub, ordered, coalesce) for sub, (ordered, coalesce) in ROUTES_SPEC.items()]
    routes = {"reseller.user.created": subs, "reseller.user.updated": subs}
    store = Store(
        client, Keys(), record_retention_s=3600, dead_letter_retention_s=3600, attempt_log_size=50
    )

    def publish(events: int, tag: str) -> None:
        users = [{**sample_user(), "id": f"usr_{tag}{n}"} for n in range(events)]
        with Publisher(ProducerSettings(redis_url=url)) as publisher:
            for start in range(0, events, 500):
                chunk = users[start : start + 500]
                publisher.publish_batch(
                    [{"event": "reseller.user.created", "data": u} for u in chunk]
                )

    publish(20, "warm")  # loads every script, so the counted part meets no NOSCRIPT
    deliver_all(store, routes, Finish)
    publish(deliveries // len(subs), "")
    client.config_resetstat()
    cpu_s = main_thread_cpu_s(client)
    delivered = deliver_all(store, routes, Finish)
    cpu_s = main_thread_cpu_s(client) - cpu_s
    stats = client.info("commandstats")
    usec = sum(int(stats.get(c, {}).get("usec", 0)) for c in SCRIPT_CMDS)
    calls = sum(int(stats.get(c, {}).get("calls", 0)) for c in SCRIPT_CMDS)
    inner = sum(int(v["calls"]) for k, v in stats.items() if k not in SCRIPT_CMDS)
    client.close()
    return {
        "deliveries": delivered,
        "script_calls": calls,
        "commands_per_delivery": inner / max(delivered, 1),
        "us_per_delivery": usec / max(delivered, 1),
        "cpu_us_per_delivery": cpu_s * 1e6 / max(delivered, 1),
        "store": records.__file__,
    }


def main_thread_cpu_s(client: Any) -> float:
    """The server's main thread CPU time (user + system): unlike ``usec``, which is wall time
    inside the commands, it does not grow while the machine's other processes hold the CPU."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def deliver_all(store: Any, routes: Any, finish: Any) -> int:
    """Drain everything pending, then serve every armed slot until it is released."""
    triggers = []
    while True:
        drained = store.drain(routes, batch=500, now_iso="2026-01-01T00:00:00.000Z")
        triggers += drained.triggers
        if not drained.more:
            break
    delivered = 0
    while triggers:
        trigger = triggers.pop()
        done: list[Any] = []
        while True:
            batch = store.claim(
                trigger.subscriber_id,
                trigger.token,
                most=MOST,
                lease_ms=LEASE_MS,
                bound=BOUND,
                finished=done,
            )
            delivered += len(done)
            if batch is None:
                break
            triggers += batch.more
            done = [(c, finish("delivered", {"outcome": "delivered"})) for c in batch.claims]
    return delivered


def extract(rev: str, into: Path) -> Path:
    """``producers/`` and ``worker/`` of ``rev`` laid out as the installed namespace."""
    tar = subprocess.run(
        ["git", "archive", "--format=tar", rev, "producers", "worker"],
        check=True,
        capture_output=True,
    ).stdout
    root = into / "reseller_webhooks"
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(root, filter="data")
    return into


def run_child(url: str, deliveries: int, pythonpath: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-m", "bench.redis_cpu", "--child", url, "--deliveries", str(deliveries)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return dict(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_cpu")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--baseline", help="a git revision to compare with, interleaved")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_round(args.child, args.deliveries)))
        return

    from reseller_webhooks.worker.devserver.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as tmp:
        sides: dict[str, Path | None] = {"current": None}
        if args.baseline:
            sides = {"baseline": extract(args.baseline, Path(tmp) / "baseline"), **sides}
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            figures = measure(server.url, sides, args.rounds, args.deliveries)
        finally:
            server.stop()
    for metric, label in METRICS.items():
        print(f"{label}, per delivery:")
        report(figures, metric)


#: What each round reports, per delivery.
METRICS = {
    "us_per_delivery": "script time (INFO commandstats usec of EVALSHA and EVAL)",
    "cpu_us_per_delivery": "Redis main-thread CPU (INFO cpu, user + sys)",
}


def report(figures: dict[str, dict[str, list[float]]], metric: str) -> None:
    for side, values in figures.items():
        print(f"  {side}: median {statistics.median(values[metric]):.1f} us")
    if "baseline" in figures:
        now, then = figures["current"][metric], figures["baseline"][metric]
        ratio = statistics.median(now) / statistics.median(then)
        pairs = [c / b for c, b in zip(now, then, strict=True)]
        print(
            f"  current / baseline: {ratio:.3f} (medians); each round's ratio: median "
            f"{statistics.median(pairs):.3f}, {min(pairs):.3f} to {max(pairs):.3f}"
        )


def measure(
    url: str, sides: dict[str, Path | None], rounds: int, deliveries: int
) -> dict[str, dict[str, list[float]]]:
    figures: dict[str, dict[str, list[float]]] = {side: {m: [] for m in METRICS} for side in sides}
    order = list(sides)
    for n in range(rounds):
        for side in order if n % 2 == 0 else order[::-1]:
            result = run_child(url, deliveries, sides[side])
            assert result["deliveries"] == deliveries, result
            for metric in METRICS:
                figures[side][metric].append(result[metric])
            print(
                f"round {n + 1} {side}: {result['us_per_delivery']:.1f} us in scripts, "
                f"{result['cpu_us_per_delivery']:.1f} us of CPU per delivery "
                f"({result['script_calls']} script calls running "
                f"{result['commands_per_delivery']:.2f} commands per delivery; {result['store']})",
                file=sys.stderr,
                flush=True,
            )
    return figures


if __name__ == "__main__":
    main()
