"""What one ``publish()`` call costs, on the hot path: one event per call while a dispatch is
pending (under load the trigger is shared, so a call is the commit script's round trip and no
Celery message), each event about a user of its own.

``python -m bench.publish_cost [--rounds 21] [--events 2000] [--baseline REV]``

Each side is a driver process with a private redis-server (as ``bench.redis_cpu``). A round
flushes Redis, arms the dispatch trigger, resets ``INFO commandstats`` and publishes ``events``
single events; it reports, per call, the caller's wall time and CPU, the commit script's time in
Redis (EVALSHA ``usec``), the Redis main thread's CPU, the commands the script ran and the memory
Redis holds per recorded event.

With ``--baseline REV`` a second driver runs the ``producers/`` and ``worker/`` of git revision
REV; the drivers take turns round by round, alternating which goes first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.harness import flush_keeping_identity, redis_main_thread_cpu_s
from bench.redis_cpu import Side, extract, interleave
from bench.redis_cpu import report as report_metric

SCRIPT_CMD = "cmdstat_evalsha"

#: What each round reports, per publish call.
METRICS = {
    "wall_us": "caller's wall time per call, us",
    "client_cpu_us": "caller's CPU per call, us",
    "script_us": "commit script time in Redis (EVALSHA usec), us",
    "redis_cpu_us": "Redis main-thread CPU (INFO cpu, user + sys), us",
    "commands": "commands the script ran",
    "memory_bytes": "Redis used_memory per recorded event, bytes",
}


class Driver:
    """Runs in a driver process, against whichever ``reseller_webhooks`` it imports."""

    def __init__(self, url: str) -> None:
        import redis

        from reseller_webhooks.producers.publisher import Publisher
        from reseller_webhooks.producers.settings import ProducerSettings
        from reseller_webhooks.worker.devserver.samples import sample_user

        self.client = redis.Redis.from_url(url)
        self.publisher = Publisher(ProducerSettings(redis_url=url))
        self.user = sample_user()

    def round(self, events: int) -> dict[str, Any]:
        flush_keeping_identity(self.client)  # the publisher remembers the store
        self.client.set(self.publisher.keys.dispatch_armed, 1)  # a dispatch is pending
        users = [{**self.user, "id": f"usr_{n}"} for n in range(events)]
        self.publisher.publish("reseller.user.created", users[0])  # script loaded
        self.client.config_resetstat()
        memory = int(self.client.info("memory")["used_memory"])
        redis_cpu = self.main_thread_cpu_s()
        cpu, started = time.process_time(), time.perf_counter()
        for user in users[1:]:
            self.publisher.publish("reseller.user.created", user)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        redis_cpu = self.main_thread_cpu_s() - redis_cpu
        memory = int(self.client.info("memory")["used_memory"]) - memory
        stats = self.client.info("commandstats")
        calls = max(int(stats[SCRIPT_CMD]["calls"]), 1)
        inner = sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))
        inner -= int(stats[SCRIPT_CMD]["calls"]) + 2  # less the INFO calls around the round
        return {
            "calls": calls,
            "wall_us": wall * 1e6 / calls,
            "client_cpu_us": cpu * 1e6 / calls,
            "script_us": int(stats[SCRIPT_CMD]["usec"]) / calls,
            "redis_cpu_us": redis_cpu * 1e6 / calls,
            "commands": inner / calls,
            "memory_bytes": memory / calls,
        }

    def main_thread_cpu_s(self) -> float:
        return redis_main_thread_cpu_s(self.client)


def serve(url: str) -> None:
    """The driver process: one JSON line per round asked for on stdin (an event count)."""
    import json

    driver = Driver(url)
    for line in sys.stdin:
        print(json.dumps(driver.round(int(line))), flush=True)


def measure(sides: dict[str, Side], rounds: int, events: int) -> dict[str, dict[str, list[float]]]:
    def line(result: dict[str, Any]) -> str:
        figures = ", ".join(f"{m} {result[m]:.1f}" for m in METRICS)
        return f"{figures} ({result['calls']} calls)"

    return interleave(sides, rounds, events, METRICS, line)


def report(figures: dict[str, dict[str, list[float]]]) -> None:
    for metric, label in METRICS.items():
        print(f"{label}:")
        report_metric(figures, metric)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publish_cost")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--baseline", help="a git revision to compare with, interleaved")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    module = "bench.publish_cost"
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        sides = {"current": Side(root / "current", None, stack, module)}
        if args.baseline:
            code = extract(args.baseline, root / "baseline-code")
            sides = {"baseline": Side(root / "baseline", code, stack, module), **sides}
        figures = measure(sides, args.rounds, args.events)
    print(f"{args.rounds} rounds of {args.events} single publish() calls per side, per call:")
    report(figures)


if __name__ == "__main__":
    main()
