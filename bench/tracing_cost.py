"""What tracing costs a delivery: a baseline revision's worker, this worker with tracing off, and
this worker with tracing on, side by side.

``python -m bench.tracing_cost [EVENTS] [ROUNDS] [BASELINE]``: one event per ``publish()`` call,
one subscriber, interleaved rounds (the order rotates each round) of the worker of git revision
BASELINE (default ``main``; its ``producers/`` and ``worker/`` first on the worker's
``PYTHONPATH``), this checkout's worker without ``OTEL_*`` variables, and this checkout's worker
exporting a span per attempt over OTLP/HTTP to a sink on loopback that answers 200 (the events
published inside a span, so every attempt span has a parent). Prints each round's rates and
worker CPU per delivery, then the medians of the ratios to the baseline.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.harness import Processes
from bench.redis_cpu import extract

SIDES = ("baseline", "off", "on")
#: The worker CPU time per delivery, ms (``scenarios._drain``).
CPU = "worker_cpu_ms_each"


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def one_side(p: Processes, sizes: scenarios.Sizes, side: str, baseline: Path, sink: str) -> Any:
    if side == "baseline":
        path = os.pathsep.join(filter(None, [str(baseline), os.environ.get("PYTHONPATH")]))
        with environ(PYTHONPATH=path):
            return scenarios.ours_throughput(p, sizes, 1)
    if side == "off":
        return scenarios.ours_throughput(p, sizes, 1)
    from opentelemetry.sdk.trace import TracerProvider

    with (
        environ(OTEL_EXPORTER_OTLP_ENDPOINT=sink, OTEL_SERVICE_NAME="bench"),
        TracerProvider().get_tracer("bench").start_as_current_span("publisher"),
    ):
        return scenarios.ours_throughput(p, sizes, 1)


def main(events: int = 3000, rounds: int = 5, rev: str = "main") -> None:
    sizes = scenarios.Sizes(events=events, pending=1, lateness_events=1, rounds=rounds)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = f"http://127.0.0.1:{server.server_address[1]}"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rw-tracing-") as tmp:
        baseline = extract(rev, Path(tmp) / "baseline")
        p = Processes(Path(tmp))
        try:
            for n in range(rounds):
                order = SIDES[n % 3 :] + SIDES[: n % 3]
                row = {side: one_side(p, sizes, side, baseline, sink) for side in order}
                rows.append(row)
                figures = [(s, row[s]["per_s"], row[s][CPU]) for s in SIDES]
                shown = ", ".join(f"{s} {rate:.0f}/s {cpu:.3f} CPU ms" for s, rate, cpu in figures)
                print(f"round {n + 1}: {shown}", flush=True)
        finally:
            p.close()
            server.shutdown()
    for side in ("off", "on"):
        cpu = statistics.median(r[side][CPU] / r["baseline"][CPU] for r in rows)
        rate = statistics.median(r[side]["per_s"] / r["baseline"]["per_s"] for r in rows)
        print(f"{side} / {rev}: CPU per delivery x{cpu:.3f}, deliveries/s x{rate:.3f} (medians)")
    for side in SIDES:
        cpu = statistics.median(r[side][CPU] for r in rows)
        print(f"{side}: median CPU ms per delivery {cpu:.3f}")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]), *sys.argv[3:4])
