"""What the ingest API counts, served at its ``/metrics``: requests by producer and status, and
how long an accepted request took to be recorded. A registry of its own (no worker metrics)."""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

REQUESTS = Counter(
    "webhooks_api_requests",
    "Ingest API requests by producer (the token's name) and HTTP status.",
    ["producer", "status"],
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "webhooks_api_ingest_seconds",
    "From the request's arrival to its answer, for publishing requests, by producer.",
    ["producer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)


@functools.cache
def _requests(producer: str, status: int) -> Counter:
    return REQUESTS.labels(producer, str(status))


@functools.cache
def _latency(producer: str) -> Histogram:
    return INGEST_SECONDS.labels(producer)


def observe(producer: str, status: int, seconds: float | None) -> None:
    """Count one request; ``seconds`` for a publishing request that reached the publisher."""
    _requests(producer, status).inc()
    if seconds is not None:
        _latency(producer).observe(seconds)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
