"""CPU pinning off (the default) against ``auto``, each beside the naive Celery task.

``python -m bench.pinning [EVENTS] [ROUNDS]``: one event per ``publish()`` call, one subscriber,
interleaved rounds of this worker unpinned, this worker with ``WEBHOOKS_CPU_AFFINITY=auto``
and the naive task (its own Redis, receiver and workers; the lock files of ``auto`` in a
temporary runtime directory). Prints each round's rates, worker CPU per delivery and ratios,
then the medians. ``auto`` pins only where no CPU quota applies and every core is allowed
(docs/cpu-pinning.md), so on such a machine this shows what pinning buys.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.harness import Processes

SETTINGS = (("off", "off"), ("auto", "auto"))


def one_round(p: Processes, sizes: scenarios.Sizes) -> dict[str, dict[str, Any]]:
    row: dict[str, dict[str, Any]] = {}
    for name, setting in SETTINGS:
        os.environ["WEBHOOKS_CPU_AFFINITY"] = setting
        try:
            row[name] = scenarios.ours_throughput(p, sizes, 1)
        finally:
            os.environ.pop("WEBHOOKS_CPU_AFFINITY", None)
    row["naive"] = scenarios.naive_throughput(p, sizes, 1)
    return row


def ratios(row: dict[str, dict[str, Any]]) -> dict[str, float]:
    naive = row["naive"]["per_s"]
    return {
        "off/naive": row["off"]["per_s"] / naive,
        "auto/naive": row["auto"]["per_s"] / naive,
        "auto/off": row["auto"]["per_s"] / row["off"]["per_s"],
    }


def describe(row: dict[str, dict[str, Any]]) -> str:
    rates = ", ".join(
        f"{name} {figures['per_s']:.0f}/s ({figures['worker_cpu_ms_each']:.2f} ms CPU each)"
        for name, figures in row.items()
    )
    return rates + "; " + ", ".join(f"{k} {v:.2f}" for k, v in ratios(row).items())


def main(events: int = 3000, rounds: int = 5) -> None:
    sizes = scenarios.Sizes(events=events, pending=1, lateness_events=1, rounds=rounds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rw-pinning-") as tmp:
        os.environ["XDG_RUNTIME_DIR"] = str(Path(tmp) / "run")
        p = Processes(Path(tmp))
        try:
            for n in range(rounds):
                rows.append(one_round(p, sizes))
                print(f"round {n + 1}: {describe(rows[-1])}", flush=True)
        finally:
            p.close()
    medians = {k: statistics.median(ratios(r)[k] for r in rows) for k in ratios(rows[0])}
    print("medians: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
