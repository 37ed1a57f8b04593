"""Producer processes publishing live at a given rate: worker CPU per event, publish -> receipt.

``python -m bench.live RATE_PER_S EVENTS [PRODUCERS]``: starts its own Redis, receiver and
one worker, and runs the benchmark's live scenario (``bench.scenarios.concurrent_producers``)
at RATE_PER_S in all, paced, without first measuring the maximum. Run it in two checkouts back to
back to compare two versions of the worker at a moderate rate.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench import scenarios
from bench.harness import Processes


def main(rate: float, count: int, producers: int = 4) -> None:
    sizes = scenarios.Sizes(events=count, pending=1, lateness_events=1)
    with tempfile.TemporaryDirectory(prefix="rw-live-") as tmp:
        p = Processes(Path(tmp))
        try:
            figures = scenarios.concurrent_producers(p, sizes, producers, rate_per_s=rate)
        finally:
            p.close()
    print(
        f"{producers} producers at {rate:g} events/s, {figures['events']} events: worker CPU"
        f" {figures['worker_cpu_ms_each']:.2f} ms per event, publish -> receipt p50"
        f" {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, max"
        f" {figures['max_ms']:.1f} ms, lost {figures['lost']}"
    )


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]), *map(int, sys.argv[3:]))
