"""The measured scenarios. Each starts its worker against a preloaded queue, or paces its load,
and returns plain figures."""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from celery import Celery

from bench.harness import Processes, cpu_seconds, rss_mb, wait_for
from bench.naive import QUEUE as NAIVE_QUEUE
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.worker.devserver.samples import sample_user

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 (the spec test vector)
EVENT = "reseller.user.created"


@dataclass(frozen=True)
class Sizes:
    events: int  # N: events per throughput run
    pending: int  # retries left pending for the memory figures
    lateness_events: int  # events whose second attempt is timed against its due time
    concurrency: int = 8
    rounds: int = 1  # interleaved rounds of the throughput scenarios; medians are reported
    fairness: str = "full"  # the load of the fairness scenario (bench.fairness.PRESETS)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


#: For the scenarios that measure failing deliveries themselves (memory of pending retries, retry
#: lateness): a circuit breaker that never opens, so every delivery makes its own attempts.
NO_BREAKER = {"breaker_after": 1_000_000}


def _subscribers(
    p: Processes,
    paths: list[str],
    retry: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    path = p.directory / "subscribers.yaml"
    config: dict[str, Any] = {
        "allow_private_networks": True,
        "subscribers": [
            {
                "id": f"s{i}",
                "url": p.receiver.url(route),
                "events": ["reseller.user.*"],
                "secret": SECRET,
                **(extra or {}),
            }
            for i, route in enumerate(paths)
        ],
    }
    if retry:
        config["retry"] = retry
    path.write_text(yaml.safe_dump(config))
    return path


def _start_ours(
    p: Processes, subscribers: Path, sizes: Sizes, name: str, python: str = sys.executable
) -> Any:
    return p.start(
        [
            python,
            "-m",
            "reseller_webhooks.worker",
            "worker",
            f"--concurrency={sizes.concurrency}",
            "--loglevel=WARNING",
        ],
        p.env(WEBHOOKS_SUBSCRIBERS=str(subscribers)),
        name,
    )


def _publisher(p: Processes) -> Publisher:
    return Publisher(ProducerSettings(redis_url=p.redis.url))


def _drain(count: Any, total: int, timeout_s: float, pid: int) -> dict[str, float]:
    """Rate from the first completion to the last (the worker starts against a full queue), and
    the worker's CPU time per completion over the same span."""
    wait_for(lambda: count() > 0, timeout_s, "the first completion")
    first, cpu, done = time.perf_counter(), cpu_seconds(pid), count()
    wait_for(lambda: count() >= total, timeout_s, f"{total} completions")
    seconds = time.perf_counter() - first
    cpu_ms = (cpu_seconds(pid) - cpu) * 1000 / max(1, total - done)
    return {
        "completed": count(),
        "seconds": round(seconds, 3),
        "per_s": round(total / seconds, 1),
        "worker_cpu_ms_each": round(cpu_ms, 3),
    }


def users(count: int, distinct: int | None = None) -> list[dict[str, Any]]:
    """``count`` users' data, each its own user (or ``distinct`` users taking turns)."""
    user = sample_user()
    return [{**user, "id": f"usr_{i % (distinct or count)}"} for i in range(count)]


def ours_throughput(
    p: Processes,
    sizes: Sizes,
    subscribers: int,
    *,
    batched: bool = False,
    distinct_users: int | None = None,
    python: str = sys.executable,
) -> dict[str, Any]:
    """N events preloaded (one ``publish`` call each, as API services do, or in batches of
    500), then drained with per-user ordering on (the default). ``python`` runs the worker (an
    interpreter with another version installed, to compare two versions side by side)."""
    p.flush()
    config = _subscribers(p, [f"/ours/{i}" for i in range(subscribers)])
    data = users(sizes.events, distinct_users)
    with _publisher(p) as publisher:
        if batched:
            for start in range(0, sizes.events, 500):
                publisher.publish_batch([(EVENT, u) for u in data[start : start + 500]])
        else:
            for u in data:
                publisher.publish(EVENT, u)
    total = sizes.events * subscribers
    name = f"ours-{subscribers}-{'batched' if batched else 'single'}-{distinct_users or 'all'}"
    worker = _start_ours(p, config, sizes, name, python)
    try:
        figures = _drain(p.receiver.count, total, 60 + total / 50, worker.pid)
    finally:
        p.stop(worker)
    return {"deliveries": total, **figures}


def _start_naive(p: Processes, sizes: Sizes, name: str, *, pinned: bool = False) -> Any:
    """The baselines' worker: one process, the same threads pool and concurrency as ours.

    ``pinned`` runs it on one core, as ours pins itself, to show what of our lead is the pin.
    """
    return p.start(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.naive",
            "worker",
            "-P",
            "threads",
            f"--concurrency={sizes.concurrency}",
            "--loglevel=WARNING",
            "--without-mingle",
            "--without-gossip",
            "-Q",
            NAIVE_QUEUE,
        ],
        p.env(),
        name,
        cpu=min(os.sched_getaffinity(0)) if pinned else None,
    )


def naive_throughput(
    p: Processes, sizes: Sizes, subscribers: int, *, pinned: bool = False
) -> dict[str, Any]:
    p.flush()
    sender = Celery(broker=p.redis.url, set_as_current=False)
    payload = {"event": EVENT, "data": sample_user(), "triggeredAt": "2026-11-22T12:00:00Z"}
    total = sizes.events * subscribers
    with sender.producer_or_acquire() as producer:
        for i in range(sizes.events):
            for s in range(subscribers):
                sender.send_task(
                    "bench.naive_deliver",
                    args=[p.receiver.url(f"/naive/{s}"), f"msg_{i}", payload],
                    queue=NAIVE_QUEUE,
                    producer=producer,
                )
    sender.close()
    worker = _start_naive(p, sizes, f"naive-{subscribers}", pinned=pinned)
    try:
        figures = _drain(p.receiver.count, total, 60 + total / 50, worker.pid)
    finally:
        p.stop(worker)
    return {"deliveries": total, **figures}


def celery_noop(p: Processes, sizes: Sizes) -> dict[str, Any]:
    p.flush()
    sender = Celery(broker=p.redis.url, set_as_current=False)
    with sender.producer_or_acquire() as producer:
        for _ in range(sizes.events):
            sender.send_task("bench.noop", queue=NAIVE_QUEUE, producer=producer)
    sender.close()
    worker = _start_naive(p, sizes, "noop")
    try:
        figures = _drain(
            lambda: int(p.client.get("bench:noop") or 0),
            sizes.events,
            120,
            worker.pid,
        )
    finally:
        p.stop(worker)
    return {"tasks": sizes.events, **figures}


def bare_http(p: Processes, sizes: Sizes) -> dict[str, Any]:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "bench.bare", p.receiver.url("/bare"), str(sizes.events)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    figures = json.loads(out.stdout)
    return {
        "requests": figures["requests"],
        "seconds": round(figures["seconds"], 3),
        "per_s": round(figures["per_s"], 1),
    }


def publish_rates(p: Processes, sizes: Sizes) -> dict[str, Any]:
    """Single calls while a dispatch is pending (under load: the trigger is shared), single
    calls that each send a trigger (an idle system: the worst case), and batches of 500."""
    p.flush()
    data = users(sizes.events)
    with _publisher(p) as publisher:
        started = time.perf_counter()
        for u in data:
            publisher.publish(EVENT, u)
        shared = sizes.events / (time.perf_counter() - started)
        p.flush()
        spent = 0.0
        for u in data:
            p.client.delete(publisher.keys.dispatch_armed)  # as if a worker had just drained
            started = time.perf_counter()
            publisher.publish(EVENT, u)
            spent += time.perf_counter() - started
        each = sizes.events / spent
        started = time.perf_counter()
        batches = max(1, sizes.events * 5 // 500)
        for _ in range(batches):
            publisher.publish_batch([(EVENT, u) for u in data[:500]])
        batch = batches * 500 / (time.perf_counter() - started)
    return {
        "single_per_s": round(shared, 1),
        "single_each_triggered_per_s": round(each, 1),
        "batch_per_s": round(batch, 1),
        "batch_size": 500,
    }


def concurrent_producers(
    p: Processes, sizes: Sizes, producers: int, rate_per_s: float = 0.0
) -> dict[str, Any]:
    """``producers`` processes publish one event per call while the worker runs (unpaced, or
    at ``rate_per_s`` in all); the delivery rate and publish -> receipt for every event."""
    import subprocess

    p.flush()
    config = _subscribers(p, ["/live"])
    worker = _start_ours(p, config, sizes, f"live-{producers}-{rate_per_s:.0f}")
    each = sizes.events // producers
    try:
        with _publisher(p) as publisher:
            publisher.publish(EVENT, users(1)[0])  # warm-up: the worker is up and connected
        wait_for(lambda: p.receiver.count() >= 1, 60, "the warm-up delivery")
        p.receiver.reset()
        start_at = time.time() + 3 + producers  # every producer started up and connected by then
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.producer",
                    p.redis.url,
                    str(each),
                    str(rate_per_s / producers),
                    f"p{n}",
                    str(start_at),
                ],
                stdout=subprocess.PIPE,
                env=p.env(),
            )
            for n in range(producers)
        ]
        time.sleep(max(0.0, start_at - time.time()))
        cpu = cpu_seconds(worker.pid)
        started = time.perf_counter()
        sent: dict[str, float] = {}
        for child in children:
            out, _ = child.communicate(timeout=300)
            sent.update(json.loads(out)["sent"])
        wait_for(lambda: p.receiver.count() >= len(sent), 120, "every event delivered")
        seconds = time.perf_counter() - started
        cpu_ms = (cpu_seconds(worker.pid) - cpu) * 1000 / len(sent)
    finally:
        p.stop(worker)
    records = [(t, i) for t, i, _ in p.receiver.records() if i in sent]
    ms = [(t - sent[i]) * 1000 for t, i in records]
    publish_span = max(sent.values()) - min(sent.values())
    return {
        "producers": producers,
        "events": len(sent),
        "lost": len(set(sent) - {i for _, i in records}),
        "publish_per_s": round(len(sent) / publish_span, 1) if publish_span else math.nan,
        "per_s": round(len(sent) / seconds, 1),
        "worker_cpu_ms_each": round(cpu_ms, 3),
        "p50_ms": round(percentile(ms, 0.5), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
    }


def pending_retries(p: Processes, sizes: Sizes) -> dict[str, Any]:
    """Worker RSS and Redis memory before and after ``pending`` deliveries wait for a retry."""
    p.flush()
    config = _subscribers(p, ["/fail"], {"schedule_s": [0, 36000], "jitter": 0}, NO_BREAKER)
    worker = _start_ours(p, config, sizes, "pending")
    data = users(sizes.pending)
    try:
        with _publisher(p) as publisher:
            publisher.publish(EVENT, data[0])
            wait_for(
                lambda: p.client.zcard("rw:due") == 1 and p.receiver.count() == 1,
                60,
                "the first pending retry",
            )
            rss_before = rss_mb(worker.pid)
            memory_before = int(p.client.info("memory")["used_memory"])
            for start in range(1, sizes.pending, 500):
                publisher.publish_batch([(EVENT, u) for u in data[start : start + 500]])
        wait_for(
            lambda: p.receiver.count() >= sizes.pending,
            120 + sizes.pending / 100,
            "every first attempt",
        )
        wait_for(lambda: p.client.zcard("rw:due") >= sizes.pending, 60, "every retry pending")
        rss_after = rss_mb(worker.pid)
        memory_after = int(p.client.info("memory")["used_memory"])
    finally:
        p.stop(worker)
    return {
        "pending": sizes.pending,
        "worker_rss_mb_before": round(rss_before, 1),
        "worker_rss_mb_after": round(rss_after, 1),
        "worker_rss_growth_mb": round(rss_after - rss_before, 1),
        "redis_bytes_per_pending_retry": round(
            (memory_after - memory_before) / (sizes.pending - 1)
        ),
        "redis_mb_total": round(memory_after / 2**20, 1),
    }


def retry_lateness(p: Processes, sizes: Sizes) -> dict[str, Any]:
    """Each event fails once and is retried 2 s later: how late is the retry, and is any twice?"""
    p.flush()
    config = _subscribers(p, ["/flaky"], {"schedule_s": [0, 2], "jitter": 0}, NO_BREAKER)
    worker = _start_ours(p, config, sizes, "lateness")
    try:
        with _publisher(p) as publisher:
            ids = publisher.publish_batch([(EVENT, u) for u in users(sizes.lateness_events)])
        wait_for(lambda: p.receiver.count() >= 2 * len(ids), 120, "every retry")
        due: dict[str, float] = {}
        for event_id in ids:
            first = json.loads(p.client.lindex(f"rw:attempts:{event_id}:s0", 0) or b"{}")
            due[event_id] = datetime.fromisoformat(first["next_due"]).timestamp()
    finally:
        p.stop(worker)
    arrivals: dict[str, list[float]] = {}
    for at, event_id, _ in p.receiver.records():
        arrivals.setdefault(event_id, []).append(at)
    late_ms = [(sorted(a)[1] - due[i]) * 1000 for i, a in arrivals.items() if len(a) >= 2]
    return {
        "retries": len(late_ms),
        "p50_ms": round(percentile(late_ms, 0.5), 1),
        "p99_ms": round(percentile(late_ms, 0.99), 1),
        "max_ms": round(max(late_ms), 1),
        "sent_twice": sum(1 for a in arrivals.values() if len(a) > 2),
        "mean_ms": round(statistics.fmean(late_ms), 1),
    }
