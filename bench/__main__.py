"""``python -m bench [--quick | --smoke] [-n N] [--json PATH]``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import fairness, report, scenarios
from bench.harness import Processes

PRESETS = {
    "full": scenarios.Sizes(events=3000, pending=100_000, lateness_events=500, rounds=3),
    "quick": scenarios.Sizes(
        events=400, pending=5000, lateness_events=200, rounds=1, fairness="quick"
    ),
    "smoke": scenarios.Sizes(
        events=40, pending=100, lateness_events=10, rounds=1, fairness="smoke"
    ),
}


#: Producer processes publishing one event per call while the worker runs.
PRODUCERS = 4

#: Users the "few users" scenario's events are about (each user's changes go in order).
FEW_USERS = 10


def run(sizes: scenarios.Sizes, directory: Path, progress: Any = print) -> dict[str, Any]:
    started = time.monotonic()

    def step_begins(name: str) -> None:
        progress(f"{time.monotonic() - started:6.1f} s  {name}", file=sys.stderr, flush=True)

    p = Processes(directory)
    try:
        result: dict[str, Any] = {"machine": machine(p), "sizes": sizes.__dict__}
        rounds = [
            run_round(number, throughput_steps(p, sizes), step_begins)
            for number in range(1, sizes.rounds + 1)
        ]
        result.update(report.medians(rounds))
        result["rounds"] = rounds
        for name, step in single_steps(p, sizes, result):
            step_begins(name)
            result[name] = step()
    finally:
        p.close()
    result["ratios"] = report.ratios(result)
    result["targets"] = report.verdicts(result)
    return result


Step = tuple[str, Callable[[], dict[str, Any]]]


def machine(p: Processes) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "redis": p.client.info("server")["redis_version"],
        "platform": platform.platform(),
    }


def throughput_steps(p: Processes, sizes: scenarios.Sizes) -> list[Step]:
    """The scenarios run in interleaved rounds: a neighbour's burst on a shared machine then
    hits every scenario of a round alike, and each ratio is taken within a round. "ours"
    publishes one event per call, each about a user of its own, as API services do."""
    return [
        ("ours_1_subscriber", lambda: scenarios.ours_throughput(p, sizes, 1)),
        ("ours_5_subscribers", lambda: scenarios.ours_throughput(p, sizes, 5)),
        (
            "ours_1_subscriber_batched",
            lambda: scenarios.ours_throughput(p, sizes, 1, batched=True),
        ),
        ("naive_1_subscriber", lambda: scenarios.naive_throughput(p, sizes, 1)),
        ("naive_5_subscribers", lambda: scenarios.naive_throughput(p, sizes, 5)),
        (
            "naive_1_subscriber_pinned",
            lambda: scenarios.naive_throughput(p, sizes, 1, pinned=True),
        ),
        ("celery_noop", lambda: scenarios.celery_noop(p, sizes)),
        ("bare_http", lambda: scenarios.bare_http(p, sizes)),
    ]


def run_round(number: int, steps: list[Step], step_begins: Callable[[str], None]) -> dict[str, Any]:
    """One round: every throughput scenario once, in order."""
    figures: dict[str, Any] = {}
    for name, step in steps:
        step_begins(f"round {number}: {name}")
        figures[name] = step()
    return figures


def single_steps(p: Processes, sizes: scenarios.Sizes, result: dict[str, Any]) -> list[Step]:
    """The scenarios run once, after the rounds (``latency`` paces itself at half the rate
    ``live_max`` found, read from ``result`` when it runs)."""
    return [
        ("publish", lambda: scenarios.publish_rates(p, sizes)),
        (
            "ours_few_users",
            lambda: scenarios.ours_throughput(p, sizes, 1, distinct_users=FEW_USERS),
        ),
        ("live_max", lambda: scenarios.concurrent_producers(p, sizes, PRODUCERS)),
        (
            "latency",
            lambda: scenarios.concurrent_producers(
                p, sizes, PRODUCERS, rate_per_s=result["live_max"]["per_s"] / 2
            ),
        ),
        ("retry_lateness", lambda: scenarios.retry_lateness(p, sizes)),
        ("pending_retries", lambda: scenarios.pending_retries(p, sizes)),
        ("fairness", lambda: fairness.side_by_side(p, fairness.PRESETS[sizes.fairness])),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="under a minute")
    mode.add_argument("--smoke", action="store_true", help="seconds; proves it runs, not speed")
    parser.add_argument("-n", "--events", type=int, help="events per throughput run")
    parser.add_argument("--pending", type=int, help="retries left pending for memory figures")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the throughput runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    sizes = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    overrides = {
        "events": args.events,
        "pending": args.pending,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
    }
    sizes = scenarios.Sizes(**{**sizes.__dict__, **{k: v for k, v in overrides.items() if v}})
    with tempfile.TemporaryDirectory(prefix="rw-bench-") as tmp:
        result = run(sizes, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(report.render(result))


if __name__ == "__main__":
    main()
