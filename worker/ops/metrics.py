"""Prometheus metrics: every worker serves ``/metrics`` on ``WEBHOOKS_METRICS_PORT`` (0: none).

Two kinds, so that no failure goes unseen:

- **The deployment's state, read from Redis at each scrape** (``RedisCollector``, in
  ``ops.deployment_metrics``): backlog and
  oldest unfinished delivery per subscriber, dead letters held and made, disabled and failing
  subscribers, undispatched events, due retries and how late the scheduler is, and deliveries
  and events unaccounted for (``records.tally``). The Lua scripts
  that move the records keep small indexes in step (``records.scripts``), so a scrape is one
  script call that never scans, and every worker reports the same numbers.
- **What this process did** (``Counter``/``Histogram``): attempts by outcome and their
  durations, publish-to-delivery time and retry lateness, plus the usual ``process_*``.
  Sum them over workers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.ops.deployment_metrics import RateLimits, RedisCollector
from reseller_webhooks.worker.records.store import Store

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

#: Outcome label of an attempt, from the delivery decision (410 Gone dead-letters too).
OUTCOME_LABEL = {"delivered": "delivered", "retry": "retry", "dead": "dead", "gone": "dead"}

ATTEMPTS = Counter(
    "webhooks_attempts",
    "HTTP attempts this worker made, by subscriber and outcome (delivered, retry, dead,"
    " throttled: a 429).",
    ["subscriber", "outcome"],
    registry=REGISTRY,
)
ATTEMPT_DURATION = Histogram(
    "webhooks_attempt_duration_seconds",
    "How long an HTTP attempt took, connection to last byte read.",
    ["subscriber"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60),
    registry=REGISTRY,
)
#: Up to the 3 days of the standard retry schedule.
_DELIVERY_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DELIVERY_BUCKETS += (300, 1800, 7200, 36000, 86400, 259200)
PUBLISH_TO_DELIVERY = Histogram(
    "webhooks_publish_to_delivery_seconds",
    "From publish to the successful attempt (Redis server clock), retries included.",
    buckets=_DELIVERY_BUCKETS,
    registry=REGISTRY,
)
RETRY_LATENESS = Histogram(
    "webhooks_retry_lateness_seconds",
    "How long after its due time this worker's scheduler made a retry ready.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)

STORE_RESET = Gauge(
    "webhooks_store_reset",
    "1 while this process refuses to work: Redis came back empty, as another store or behind"
    " (`reseller-webhooks store accept-reset`).",
    registry=REGISTRY,
)
STORE_SEEN = Gauge(
    "webhooks_store_published_seen",
    "The events-published count this process holds as the store's high-water mark.",
    registry=REGISTRY,
)


# The labelled children, looked up once: ``labels()`` costs more than the update itself.
@functools.cache
def _attempts(subscriber_id: str, outcome: str) -> Counter:
    return ATTEMPTS.labels(subscriber_id, OUTCOME_LABEL.get(outcome, outcome))


@functools.cache
def _duration(subscriber_id: str) -> Histogram:
    return ATTEMPT_DURATION.labels(subscriber_id)


def record_attempt(
    subscriber_id: str, outcome: str, duration_s: float, *, publish_to_delivery_s: float | None
) -> None:
    """Count one HTTP attempt (called by the deliverer as it decides the outcome)."""
    _attempts(subscriber_id, outcome).inc()
    _duration(subscriber_id).observe(duration_s)
    if publish_to_delivery_s is not None:
        PUBLISH_TO_DELIVERY.observe(max(0.0, publish_to_delivery_s))


def record_sweep(late_ms: Sequence[int]) -> None:
    for ms in late_ms:
        RETRY_LATENESS.observe(max(0, ms) / 1000)


class MetricsServer:
    """The /metrics endpoint on a thread of its own, from :meth:`start` to :meth:`stop`.

    ``subscriber_ids`` gives the configured subscribers at each scrape; those that have had
    deliveries are reported too, configured or not. A port already taken is logged and the
    worker runs on without an endpoint."""

    def __init__(
        self,
        settings: WorkerSettings,
        store: Store,
        subscriber_ids: Callable[[], Iterable[str]],
        rate_limits: RateLimits | None = None,
    ) -> None:
        self._settings = settings
        self._collector = RedisCollector(
            store,
            subscriber_ids,
            dead_ttl_s=settings.dead_letter_retention_s,
            rate_limits=rate_limits,
        )
        self._server: Any = None
        self._thread: Any = None

    @property
    def name(self) -> str:
        return "webhooks-metrics"

    def start(self) -> None:
        settings = self._settings
        REGISTRY.register(self._collector)
        try:
            self._server, self._thread = start_http_server(
                settings.metrics_port, addr=settings.metrics_host, registry=REGISTRY
            )
        except OSError as exc:
            log.error(
                "metrics: cannot listen on %s:%d (%s); this worker serves no /metrics"
                " (WEBHOOKS_METRICS_PORT)",
                settings.metrics_host,
                settings.metrics_port,
                exc.strerror or type(exc).__name__,
            )
            return
        host, port = self._server.server_address[:2]
        log.info("metrics on http://%s:%d/metrics", host, port)

    def stop(self, timeout_s: float) -> bool:
        """Close the listening socket and end its thread."""
        REGISTRY.unregister(self._collector)
        if self._server is None:
            return True
        self._server.shutdown()  # returns once the serving loop has ended (it polls every 0.5 s)
        self._server.server_close()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


def metrics_server(
    settings: WorkerSettings,
    store: Store,
    subscriber_ids: Callable[[], Iterable[str]],
    rate_limits: RateLimits | None = None,
) -> MetricsServer | None:
    """The worker's /metrics endpoint, to start; None when ``WEBHOOKS_METRICS_PORT`` is 0.
    ``rate_limits`` gives each configured subscriber's ``rate_limit_per_s`` at each scrape."""
    if settings.metrics_port == 0:
        return None
    return MetricsServer(settings, store, subscriber_ids, rate_limits)
