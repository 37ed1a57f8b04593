"""One publisher, paced: worker CPU per event and publish -> receipt at a steady low rate.

``python -m bench.paced RATE_PER_S EVENTS``: starts its own Redis, receiver and one worker,
publishes EVENTS single events (each about a user of its own) at RATE_PER_S from this process,
and prints the worker's CPU time per event and the p50 / p99 publish -> receipt. Run it in two
checkouts back to back to compare two versions of the worker at the rates API services see.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench import scenarios
from bench.harness import Processes, cpu_seconds, wait_for


def main(rate: float, count: int) -> None:
    sizes = scenarios.Sizes(events=count, pending=1, lateness_events=1)
    with tempfile.TemporaryDirectory(prefix="rw-paced-") as tmp:
        p = Processes(Path(tmp))
        try:
            config = scenarios._subscribers(p, ["/paced"])
            worker = scenarios._start_ours(p, config, sizes, "paced")
            data = scenarios.users(count + 1)
            with scenarios._publisher(p) as publisher:
                publisher.publish(scenarios.EVENT, data[-1])  # warm-up
                wait_for(lambda: p.receiver.count() >= 1, 60, "the warm-up delivery")
                cpu = cpu_seconds(worker.pid)
                sent: dict[str, float] = {}
                started = time.perf_counter()
                for i in range(count):
                    pause = started + i / rate - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    at = time.time()
                    sent[publisher.publish(scenarios.EVENT, data[i])] = at
                wait_for(lambda: p.receiver.count() >= count + 1, 120, "every delivery")
                cpu_ms = (cpu_seconds(worker.pid) - cpu) * 1000 / count
            p.stop(worker)
            ms = [(t - sent[i]) * 1000 for t, i, _ in p.receiver.records() if i in sent]
        finally:
            p.close()
    print(
        f"{rate:g} events/s, {count} events: worker CPU {cpu_ms:.2f} ms per event, publish ->"
        f" receipt p50 {scenarios.percentile(ms, 0.5):.1f} ms, p99"
        f" {scenarios.percentile(ms, 0.99):.1f} ms"
    )


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]))
