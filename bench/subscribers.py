"""Worker memory against the number of subscribers.

``python -m bench.subscribers [--counts 3,1000] [--baseline PYTHON]``: for each count, one
worker process (8 threads) with that many subscribers on loopback. Every subscriber but the first
takes only ``reseller.user.updated``; one ``reseller.user.created`` is delivered to the first, then
the worker's RSS is read ("idle": every other subscriber configured, none sent to). Then one
``reseller.user.updated`` goes to every subscriber, and the RSS is read again ("all sent to":
each has been attempted once). ``--baseline`` runs the same with another interpreter (one with
an earlier version of the package installed) in the same run, side by side.

``--throughput ROUNDS`` then measures delivery throughput (``ours``, 1 and 5 subscribers, 3,000
events, one ``publish`` call each) with both interpreters in interleaved rounds, with the
ratio this/baseline per round: the HTTP client setup is on the hot path.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.harness import Processes, rss_mb, wait_for
from bench.scenarios import SECRET, Sizes, ours_throughput, users
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings

#: RSS is read this many times, a short while apart, after the deliveries; the largest is kept.
SAMPLES = 5


def write_subscribers(p: Processes, count: int) -> Path:
    path = p.directory / f"subscribers-{count}.yaml"
    subscribers = [
        {
            "id": f"s{i}",
            "url": p.receiver.url(f"/sub/{i}"),
            "events": ["reseller.user.created" if i == 0 else "reseller.user.updated"],
            "secret": SECRET,
        }
        for i in range(count)
    ]
    path.write_text(yaml.safe_dump({"allow_private_networks": True, "subscribers": subscribers}))
    return path


def settled_rss(pid: int) -> float:
    peak = 0.0
    for _ in range(SAMPLES):
        peak = max(peak, rss_mb(pid))
        time.sleep(0.2)
    return peak


def measure(p: Processes, python: str, count: int) -> dict[str, Any]:
    p.flush()
    config = write_subscribers(p, count)
    worker = p.start(
        [
            python,
            "-m",
            "reseller_webhooks.worker",
            "worker",
            "--concurrency=8",
            "--loglevel=WARNING",
        ],
        p.env(WEBHOOKS_SUBSCRIBERS=str(config)),
        f"subscribers-{count}",
    )
    try:
        user = users(1)[0]
        with Publisher(ProducerSettings(redis_url=p.redis.url)) as publisher:
            publisher.user_created(user)
            wait_for(lambda: p.receiver.count() >= 1, 1800, "the first delivery")
            idle = settled_rss(worker.pid)
            publisher.user_updated(user)
        wait_for(lambda: p.receiver.count() >= count, 60 + count / 10, f"{count} deliveries")
        return {"idle_mb": round(idle, 1), "all_sent_to_mb": round(settled_rss(worker.pid), 1)}
    finally:
        p.stop(worker)


def per_subscriber_kb(low: dict[str, Any], high: dict[str, Any], extra: int, key: str) -> float:
    return round((high[key] - low[key]) * 1024 / extra, 1)


def throughput_round(p: Processes, pythons: list[tuple[str, str]], events: int) -> str:
    """One run of each interpreter for 1 and 5 subscribers; callers alternate the order of
    ``pythons`` between rounds, so that neither always runs first."""
    sizes = Sizes(events=events, pending=1, lateness_events=1)
    parts = []
    for subscribers in (1, 5):
        runs = {
            label: ours_throughput(p, sizes, subscribers, python=python)
            for label, python in pythons
        }
        rates = {label: run["per_s"] for label, run in runs.items()}
        shown = ", ".join(
            f"{label} {run['per_s']:.0f}/s ({run['worker_cpu_ms_each']:.2f} ms CPU each)"
            for label, run in runs.items()
        )
        ratio = rates["this checkout"] / rates["baseline"] if "baseline" in rates else 1.0
        parts.append(f"{subscribers} subscriber(s): {shown} (this/baseline {ratio:.2f})")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.subscribers")
    parser.add_argument("--counts", default="3,1000", help="two subscriber counts, low,high")
    parser.add_argument("--baseline", help="another interpreter to measure beside this one")
    parser.add_argument("--throughput", type=int, default=0, metavar="ROUNDS")
    parser.add_argument("--events", type=int, default=3000, help="events per throughput run")
    parser.add_argument("--logs", help="a folder to hold the run (deleted after; default: temp)")
    args = parser.parse_args(argv)
    low, high = (int(c) for c in args.counts.split(","))
    pythons = [("baseline", args.baseline)] if args.baseline else []
    pythons.append(("this checkout", sys.executable))
    with tempfile.TemporaryDirectory(prefix="rw-subscribers-", dir=args.logs) as tmp:
        p = Processes(Path(tmp))
        try:
            for label, python in pythons:
                figures = {count: measure(p, python, count) for count in (low, high)}
                kb = {
                    key: per_subscriber_kb(figures[low], figures[high], high - low, key)
                    for key in ("idle_mb", "all_sent_to_mb")
                }
                print(
                    f"{label}: RSS idle {figures[low]['idle_mb']} MB with {low} subscribers,"
                    f" {figures[high]['idle_mb']} MB with {high} ({kb['idle_mb']} kB each);"
                    f" after one delivery to each {figures[low]['all_sent_to_mb']} MB,"
                    f" {figures[high]['all_sent_to_mb']} MB ({kb['all_sent_to_mb']} kB each)",
                    flush=True,
                )
            for number in range(1, args.throughput + 1):
                order = pythons if number % 2 else pythons[::-1]
                print(
                    f"throughput round {number}: {throughput_round(p, order, args.events)}",
                    flush=True,
                )
        finally:
            p.close()


if __name__ == "__main__":
    main()
