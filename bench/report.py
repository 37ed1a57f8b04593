"""Ratios, targets and the printed table of a benchmark run."""

from __future__ import annotations

import math
import statistics
from typing import Any

# (label, value getter, target, higher is better)
TARGETS: list[tuple[str, str, float, bool]] = [
    ("1 subscriber, one event per call: ours / naive", "ratios.one_sub_vs_naive", 3.0, True),
    ("1 subscriber, one event per call: ours / Celery no-op", "ratios.one_sub_vs_noop", 1.5, True),
    ("5 subscribers, one event per call: ours / naive", "ratios.five_subs_vs_naive", 3.0, True),
    ("1 subscriber, batched publishing: ours / naive", "ratios.batched_vs_naive", 2.0, True),
    (
        "single-call publishing: trigger shared / each call triggered (previous design)",
        "ratios.single_shared_vs_each_triggered",
        1.5,
        True,
    ),
    (
        "batch / single-call publishing (each triggered)",
        "ratios.batch_vs_single_publish",
        10.0,
        True,
    ),
    ("events lost with 4 producers publishing live", "live_max.lost", 0.0, False),
    ("p99 publish -> receipt, 4 producers at half max (ms)", "latency.p99_ms", 50.0, False),
    ("p99 retry lateness (ms)", "retry_lateness.p99_ms", 1000.0, False),
    ("retries sent twice", "retry_lateness.sent_twice", 0.0, False),
    (
        "healthy receivers' p99, some slow or failing / all healthy",
        "fairness.p99_ratio",
        2.0,
        False,
    ),
    ("published ids unaccounted for (fairness runs)", "fairness.unaccounted", 0.0, False),
    (
        "worker RSS growth with retries pending (MB)",
        "pending_retries.worker_rss_growth_mb",
        20.0,
        False,
    ),
]


def lookup(data: dict[str, Any], path: str) -> float:
    value: Any = data
    for part in path.split("."):
        value = value[part]
    return float(value)


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per scenario, the round with the median rate, and every round's rate beside it."""
    out = {}
    for name in rounds[0]:
        runs = sorted((r[name] for r in rounds), key=lambda f: f["per_s"])
        out[name] = {**runs[(len(runs) - 1) // 2], "per_s_rounds": [f["per_s"] for f in runs]}
    return out


def _round_ratios(r: dict[str, Any]) -> dict[str, float]:
    one, five = r["ours_1_subscriber"]["per_s"], r["ours_5_subscribers"]["per_s"]
    return {
        "one_sub_vs_naive": _ratio(one, r["naive_1_subscriber"]["per_s"]),
        "one_sub_vs_naive_pinned": _ratio(one, r["naive_1_subscriber_pinned"]["per_s"]),
        "one_sub_vs_noop": _ratio(one, r["celery_noop"]["per_s"]),
        "batched_vs_naive": _ratio(
            r["ours_1_subscriber_batched"]["per_s"], r["naive_1_subscriber"]["per_s"]
        ),
        "one_sub_vs_bare_http": _ratio(one, r["bare_http"]["per_s"]),
        "five_subs_vs_naive": _ratio(five, r["naive_5_subscribers"]["per_s"]),
        "five_subs_vs_bare_http": _ratio(five, r["bare_http"]["per_s"]),
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else math.nan


def ratios(r: dict[str, Any]) -> dict[str, float]:
    """Throughput ratios are taken within each round (scenarios run minutes apart would share
    less of the machine's mood), then the median over rounds."""
    per_round = [_round_ratios(figures) for figures in r["rounds"]]
    out = {k: round(statistics.median(x[k] for x in per_round), 2) for k in per_round[0]}
    pub = r["publish"]
    out["batch_vs_single_publish"] = _ratio(pub["batch_per_s"], pub["single_each_triggered_per_s"])
    out["single_shared_vs_each_triggered"] = _ratio(
        pub["single_per_s"], pub["single_each_triggered_per_s"]
    )
    return out


def verdicts(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for label, path, target, higher in TARGETS:
        value = lookup(r, path)
        met = value >= target if higher else value <= target
        out.append(
            {
                "target": label,
                "value": value,
                "goal": f"{'>=' if higher else '<='} {target:g}",
                "met": met,
            }
        )
    return out


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"reseller-webhooks benchmark, {m['date']}: {m['cores']} cores, Python {m['python']}, "
        f"Redis {m['redis']}, N = {r['sizes']['events']} events, "
        f"concurrency {r['sizes']['concurrency']} threads, one worker process each, "
        f"{r['sizes']['rounds']} interleaved round(s) of the throughput runs",
        "",
        f"{'scenario':<44}{'completed':>10}{'per second':>12}{'CPU ms each':>13}  rounds",
    ]
    rows = [
        ("ours, 1 subscriber (one event per call)", "ours_1_subscriber"),
        ("ours, 5 subscribers (one event per call)", "ours_5_subscribers"),
        ("ours, 1 subscriber, batches of 500", "ours_1_subscriber_batched"),
        ("ours, events about 10 users (ordered)", "ours_few_users"),
        ("ours, 4 producers publishing live", "live_max"),
        ("naive Celery task, 1 subscriber", "naive_1_subscriber"),
        ("naive Celery task, 5 subscribers", "naive_5_subscribers"),
        ("naive Celery task, 1 subscriber, one core", "naive_1_subscriber_pinned"),
        ("Celery no-op task", "celery_noop"),
        ("bare httpx loop, no queue", "bare_http"),
    ]
    for label, key in rows:
        fig = r[key]
        done = fig.get("completed", fig.get("requests", fig.get("events")))
        spread = " / ".join(f"{x:.0f}" for x in fig.get("per_s_rounds", []))
        cpu = f"{fig['worker_cpu_ms_each']:.2f}" if "worker_cpu_ms_each" in fig else "-"
        lines.append(f"{label:<44}{done:>10}{fig['per_s']:>12.1f}{cpu:>13}  {spread}")
    pub, lat, late, pend = r["publish"], r["latency"], r["retry_lateness"], r["pending_retries"]
    live = r["live_max"]
    lines += [
        "",
        f"publish: {pub['single_per_s']:.0f} events/s single calls (trigger shared), "
        f"{pub['single_each_triggered_per_s']:.0f} single calls each sending a trigger, "
        f"{pub['batch_per_s']:.0f} events/s in batches of {pub['batch_size']}",
        f"4 producers live, unpaced: published {live['publish_per_s']:.0f}/s, delivered "
        f"{live['per_s']:.0f}/s, publish -> receipt p50 {live['p50_ms']} ms, p99 "
        f"{live['p99_ms']} ms, lost {live['lost']}",
        f"4 producers live at half that ({lat['publish_per_s']:.0f} events/s): p50 "
        f"{lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms",
        f"retry lateness (due -> sent), {late['retries']} retries: p50 {late['p50_ms']} ms, "
        f"p99 {late['p99_ms']} ms, max {late['max_ms']} ms; sent twice: {late['sent_twice']}",
        f"{pend['pending']} retries pending: worker RSS {pend['worker_rss_mb_before']} -> "
        f"{pend['worker_rss_mb_after']} MB; Redis {pend['redis_bytes_per_pending_retry']} "
        f"bytes per pending retry ({pend['redis_mb_total']} MB in all)",
        fairness_line(r["fairness"]),
        "",
        "ratios: " + ", ".join(f"{k} {v}" for k, v in r["ratios"].items()),
        "",
        "targets:",
    ]
    for v in r["targets"]:
        lines.append(
            f"  [{'met' if v['met'] else 'MISSED'}] {v['target']}: {v['value']:g} "
            f"(goal {v['goal']})"
        )
    return "\n".join(lines)


def fairness_line(f: dict[str, Any]) -> str:
    load, h, d = f["load"], f["all_healthy"], f["degraded"]
    return (
        f"{load['receivers']} receivers, {load['rate_per_s']:g} events/s of"
        f" ~{load['body_bytes'] // 1000} kB to each, {load['workers']} workers: healthy ones'"
        f" publish -> receipt p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms all healthy;"
        f" p50 {d['p50_ms']} ms, p99 {d['p99_ms']} ms with {load['slow']} slow (2 s) and"
        f" {load['failing']} failing (p99 x{f['p99_ratio']}); ids unaccounted for:"
        f" {f['unaccounted']}"
    )
