"""Fairness: 100 receivers, 10 of them slow or failing. Does the healthy 90's publish -> receipt
hold?

``python -m bench.fairness [--quick | --smoke] [--baseline PYTHON] [--rounds N] [--json PATH]``:
its own Redis, one loopback receiver process (one port, a path per subscriber: distinct URLs make
distinct subscribers) and real worker processes. Producer processes publish ~7 KB events, one per
call, at a fixed rate; every subscriber takes every event. The same load runs twice side by side:
all receivers healthy, then 5 answering after 2 s (``/slow``) and 5 answering 503 (``/fail``).
Reported: the healthy receivers' p50 / p99 publish -> receipt in both runs and the ratio, and
whether every published id is accounted for at the end at every subscriber (delivered, waiting or
dead, read from its delivery record) with the audit balanced. ``--baseline`` runs the same
workers from another interpreter (an earlier version installed) in the same rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from celery import Celery

from bench.harness import Processes, wait_for
from bench.scenarios import SECRET, percentile
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.ops.audit import audit
from reseller_webhooks.worker.records.shapes import delivery_id
from reseller_webhooks.worker.records.store import Store

#: What a delivery record's state says at the end: still to be delivered, or ended.
WAITING_STATES = {"blocked", "ready", "running", "waiting"}


@dataclass(frozen=True)
class Load:
    receivers: int = 100
    slow: int = 5  # of them answering after 2 s in the degraded run
    failing: int = 5  # of them answering 503 in the degraded run
    rate_per_s: float = 5.0  # events published per second, in all (each to every receiver)
    seconds: float = 12.0  # of publishing
    producers: int = 4
    workers: int = 2
    concurrency: int = 8
    body_bytes: int = 7000

    @property
    def events(self) -> int:
        return round(self.rate_per_s * self.seconds)


PRESETS = {
    "full": Load(),
    "quick": Load(seconds=5.0),
    "smoke": Load(receivers=20, slow=1, failing=1, rate_per_s=2.0, seconds=2.0, producers=2),
}


def routes(load: Load, degraded: bool) -> list[str]:
    """Each subscriber's path: ``/ok/N``, and in the degraded run the last ones ``/slow/N`` and
    ``/fail/N``."""
    healthy = load.receivers - (load.slow + load.failing if degraded else 0)
    kinds = ["ok"] * healthy + (["slow"] * load.slow + ["fail"] * load.failing if degraded else [])
    return [f"/{kind}/{n}" for n, kind in enumerate(kinds)]


def write_subscribers(p: Processes, paths: list[str]) -> Path:
    path = p.directory / "fairness-subscribers.yaml"
    subscribers = [
        {
            "id": f"f{n}",
            "url": p.receiver.url(route),
            "events": ["reseller.user.*"],
            "secret": SECRET,
        }
        for n, route in enumerate(paths)
    ]
    path.write_text(yaml.safe_dump({"allow_private_networks": True, "subscribers": subscribers}))
    return path


def start_workers(p: Processes, load: Load, config: Path, python: str, name: str) -> list[Any]:
    argv = [
        python,
        "-m",
        "reseller_webhooks.worker",
        "worker",
        f"--concurrency={load.concurrency}",
        "--loglevel=WARNING",
    ]
    env = p.env(WEBHOOKS_SUBSCRIBERS=str(config))
    workers = [
        p.start([*argv, f"--hostname={name}-{n}@%h"], env, f"{name}-{n}")
        for n in range(load.workers)
    ]
    control = Celery(broker=p.redis.url, set_as_current=False)
    try:
        wait_for(
            lambda: len(control.control.ping(timeout=0.5)) >= load.workers,
            120,
            "every worker to answer a ping",
            poll_s=0.2,
        )
    finally:
        control.close()
    return workers


def publish(p: Processes, load: Load) -> dict[str, float]:
    """Every producer's events, paced; returns {event id: publish time}."""
    start_at = time.time() + 2 + load.producers  # every producer up and connected by then
    each = load.events // load.producers
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.producer",
                p.redis.url,
                str(each),
                str(load.rate_per_s / load.producers),
                f"p{n}",
                str(start_at),
                str(load.body_bytes),
            ],
            stdout=subprocess.PIPE,
            env=p.env(),
        )
        for n in range(load.producers)
    ]
    sent: dict[str, float] = {}
    for child in children:
        out, _ = child.communicate(timeout=300)
        sent.update(json.loads(out)["sent"])
    return sent


def accounted(p: Processes, sent: dict[str, float], subscribers: int) -> Counter[str]:
    """Every (published id, subscriber): what its delivery record says (``missing``: none)."""
    keys = Keys("rw")
    states: Counter[str] = Counter()
    pairs = [(event, f"f{n}") for event in sent for n in range(subscribers)]
    for start in range(0, len(pairs), 1000):
        pipe = p.client.pipeline(transaction=False)
        for event, sub in pairs[start : start + 1000]:
            pipe.hget(keys.delivery(delivery_id(event, sub)), "state")
        for raw in pipe.execute():
            state = raw.decode() if raw else "missing"
            states["waiting" if state in WAITING_STATES else state] += 1
    return states


def balanced(p: Processes, subscribers: int) -> bool:
    """Whether the audit balances every subscriber's deliveries (the deployment-wide event
    counts are left out: they carry over the scenarios run before in the same Redis, whose
    pending events the flush between scenarios drops)."""
    store = Store(
        p.client,
        Keys("rw"),
        record_retention_s=3600,
        dead_letter_retention_s=3600,
        attempt_log_size=50,
    )
    report = audit(store, dead_ttl_s=3600, subscriber_ids=[f"f{n}" for n in range(subscribers)])
    return not any(s.unaccounted for s in report.subscribers)


def one_run(p: Processes, load: Load, *, degraded: bool, python: str, label: str) -> dict[str, Any]:
    """One run: workers up, a warm-up event at every healthy receiver, the paced load, then
    every healthy receiver's copy of every event waited for (bounded)."""
    p.flush()
    paths = routes(load, degraded)
    healthy = sum(1 for route in paths if route.startswith("/ok/"))
    workers = start_workers(p, load, write_subscribers(p, paths), python, label)
    try:
        with Publisher(ProducerSettings(redis_url=p.redis.url)) as publisher:
            publisher.publish("reseller.user.created", {"id": "warm-up"} | _user())
        wait_for(lambda: p.receiver.count_of("ok") >= healthy, 60, "the warm-up deliveries")
        p.receiver.reset()
        sent = publish(p, load)
        expected = len(sent) * healthy
        with contextlib.suppress(TimeoutError):  # what is missing is reported
            wait_for(
                lambda: p.receiver.count_of("ok") >= expected,
                60 + load.seconds * 4,
                f"{expected} deliveries to the healthy receivers",
                poll_s=0.1,
            )
    finally:
        for worker in workers:
            p.stop(worker)
    return figures(p, load, sent, healthy) | {"audit_balanced": balanced(p, load.receivers)}


def _user() -> dict[str, Any]:
    from bench.producer import padded_user

    return {k: v for k, v in padded_user(0).items() if k != "id"}


def figures(p: Processes, load: Load, sent: dict[str, float], healthy: int) -> dict[str, Any]:
    first: dict[tuple[str, str], float] = {}
    for at, event, route in p.receiver.records():
        if route.startswith("/ok/") and event in sent:
            key = (event, route)
            first[key] = min(at, first.get(key, at))
    ms = [(at - sent[event]) * 1000 for (event, _), at in first.items()]
    states = accounted(p, sent, load.receivers)
    return {
        "events": len(sent),
        "healthy_receivers": healthy,
        "healthy_missing": len(sent) * healthy - len(first),
        "p50_ms": round(percentile(ms, 0.5), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "max_ms": round(max(ms, default=float("nan")), 1),
        # what the slow receivers got meanwhile: the price of the healthy ones' share
        "slow_received": p.receiver.count_of("slow"),
        "deliveries": dict(states),
        "accounted": states["missing"] == 0 and sum(states.values()) == len(sent) * load.receivers,
    }


def side_by_side(
    p: Processes, load: Load, python: str = sys.executable, label: str = "ours"
) -> dict[str, Any]:
    """The healthy run and the degraded run, one after the other, and the ratio of p99s."""
    healthy = one_run(p, load, degraded=False, python=python, label=f"{label}-healthy")
    degraded = one_run(p, load, degraded=True, python=python, label=f"{label}-degraded")
    return {
        "load": asdict(load),
        "all_healthy": healthy,
        "degraded": degraded,
        "p99_ratio": round(degraded["p99_ms"] / healthy["p99_ms"], 2),
        "unaccounted": unaccounted(healthy) + unaccounted(degraded),
        "p50_ratio": round(degraded["p50_ms"] / healthy["p50_ms"], 2),
    }


def unaccounted(run: dict[str, Any]) -> int:
    """Published ids, at any subscriber, with no delivery record; plus one when the audit
    does not balance."""
    return int(run["deliveries"].get("missing", 0)) + (0 if run["audit_balanced"] else 1)


def describe(label: str, result: dict[str, Any]) -> str:
    h, d = result["all_healthy"], result["degraded"]
    return (
        f"{label}: healthy receivers' publish -> receipt, all healthy p50 {h['p50_ms']:.0f} ms"
        f" p99 {h['p99_ms']:.0f} ms; with {result['load']['slow']} slow +"
        f" {result['load']['failing']} failing p50 {d['p50_ms']:.0f} ms p99 {d['p99_ms']:.0f} ms"
        f" (p99 x{result['p99_ratio']:.2f}), slow receivers got {d['slow_received']};"
        f" missing {h['healthy_missing']}/{d['healthy_missing']};"
        f" every id accounted for: {h['accounted'] and d['accounted']}"
        f" {d['deliveries']}; audit balanced: {h['audit_balanced'] and d['audit_balanced']}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--smoke", action="store_true")
    parser.add_argument("--baseline", help="another interpreter whose workers run beside these")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, help="of publishing, per run")
    parser.add_argument("--rate", type=float, help="events published per second, in all")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    load = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.seconds:
        load = replace(load, seconds=args.seconds)
    if args.rate:
        load = replace(load, rate_per_s=args.rate)
    pythons = [("baseline", args.baseline)] if args.baseline else []
    pythons.append(("this checkout", sys.executable))
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rw-fairness-") as tmp:
        p = Processes(Path(tmp))
        try:
            for number in range(1, args.rounds + 1):
                order = pythons if number % 2 else pythons[::-1]
                for label, python in order:
                    result = side_by_side(p, load, python, label.split()[0])
                    results.append({"round": number, "label": label, **result})
                    print(f"round {number}, {describe(label, result)}", flush=True)
        finally:
            p.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
