"""Prometheus metrics: every worker serves ``/metrics`` on ``WEBHOOKS_METRICS_PORT`` (0: none).

Two kinds, so that no failure goes unseen:

- **The deployment's state, read from Redis at each scrape** (``RedisCollector``): backlog and
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

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.ops.limit_gauges import limit_metrics
from reseller_webhooks.worker.records import scripts
from reseller_webhooks.worker.records.store import Store
from reseller_webhooks.worker.records.tally import (
    GlobalTally,
    Tally,
    events_unaccounted,
    unaccounted,
)

log = logging.getLogger(__name__)

#: Each configured subscriber's ``rate_limit_per_s`` (None: none), asked at each scrape.
RateLimits = Callable[[], Mapping[str, float | None]]

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


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    subscriber_id: str
    backlog: int
    oldest_s: float
    dead_letters: int
    dead_lettered_total: int
    disabled: bool
    failing_s: float
    tally: Tally = dataclasses.field(default_factory=Tally)

    @property
    def unaccounted(self) -> int:
        return unaccounted(self.tally, self.backlog)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The deployment's state as one script call read it."""

    subscribers: list[SubscriberStats]
    undispatched: int
    oldest_undispatched_s: float
    due: int
    overdue_s: float
    tally: GlobalTally = dataclasses.field(default_factory=GlobalTally)

    @property
    def events_unaccounted(self) -> int:
        return events_unaccounted(self.tally, self.undispatched)


class StatsReader:
    """Reads a :class:`Snapshot` in one script call (``records/lua/stats.lua``)."""

    def __init__(self, store: Store, *, dead_ttl_s: int) -> None:
        self.keys = store.keys
        self.dead_ttl_ms = dead_ttl_s * 1000
        self._script = scripts.register(store.redis, "stats")

    def read(self, subscriber_ids: Iterable[str]) -> Snapshot:
        """The configured subscribers and every one that has had deliveries."""
        k = self.keys
        raw = self._script(
            keys=[k.pending, k.due, k.active_subscribers],
            args=[k.prefix, self.dead_ttl_ms, *subscriber_ids],
        )
        return _snapshot(cast(list[Any], raw))


def _snapshot(raw: list[Any]) -> Snapshot:
    rows, undispatched, oldest_undispatched, due, overdue, totals = raw
    return Snapshot(
        subscribers=[
            SubscriberStats(
                subscriber_id=sub.decode(),
                backlog=int(backlog),
                oldest_s=int(oldest) / 1000,
                dead_letters=int(held),
                dead_lettered_total=int(ever),
                disabled=bool(disabled),
                failing_s=int(failing) / 1000,
                tally=Tally.of(counts),
            )
            for sub, backlog, oldest, held, ever, disabled, failing, counts in rows
        ],
        undispatched=int(undispatched),
        oldest_undispatched_s=int(oldest_undispatched) / 1000,
        due=int(due),
        overdue_s=int(overdue) / 1000,
        tally=GlobalTally.of(totals),
    )


def _gauge(name: str, doc: str, rows: Iterable[tuple[str, float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["subscriber"])
    for sub, value in rows:
        family.add_metric([sub], value)
    return family


class RedisCollector(Collector):
    """The deployment-wide gauges, read from Redis at each scrape (one script call)."""

    def __init__(
        self,
        store: Store,
        subscriber_ids: Callable[[], Iterable[str]],
        *,
        dead_ttl_s: int,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self.reader = StatsReader(store, dead_ttl_s=dead_ttl_s)
        self.subscriber_ids = subscriber_ids
        self.store = store
        self.rate_limits = rate_limits

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not read Redis

    def collect(self) -> Iterable[Metric]:
        started = time.monotonic()
        try:
            snap = self.reader.read(self.subscriber_ids())
        except redis.RedisError as exc:
            log.warning("metrics: cannot read Redis (%s)", type(exc).__name__)
            yield _redis_up(0)
            return
        yield _redis_up(1)
        yield from _per_subscriber(snap.subscribers)
        if self.rate_limits is not None:
            yield from limit_metrics(self.store, self.rate_limits())
        yield from _deployment_wide(snap)
        yield GaugeMetricFamily(
            "webhooks_metrics_read_seconds",
            "How long this scrape took to read Redis.",
            value=time.monotonic() - started,
        )


def _redis_up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "webhooks_redis_up", "1 if this worker read Redis for this scrape.", value=value
    )


def _per_subscriber(subs: Sequence[SubscriberStats]) -> Iterable[Metric]:
    """Backlog, dead letters and health, one sample per subscriber each."""
    yield _gauge(
        "webhooks_backlog",
        "Deliveries not yet finished (blocked, ready, running or waiting for a retry).",
        ((s.subscriber_id, s.backlog) for s in subs),
    )
    yield _gauge(
        "webhooks_oldest_pending_seconds",
        "Age, since its publish, of the subscriber's oldest unfinished delivery (0: none).",
        ((s.subscriber_id, s.oldest_s) for s in subs),
    )
    yield _gauge(
        "webhooks_dead_letters",
        "Dead letters held (not replayed, purged or expired).",
        ((s.subscriber_id, s.dead_letters) for s in subs),
    )
    made = CounterMetricFamily(
        "webhooks_dead_lettered",
        "Deliveries dead-lettered, ever (kept in Redis: the same on every worker).",
        labels=["subscriber"],
    )
    for s in subs:
        made.add_metric([s.subscriber_id], s.dead_lettered_total)
    yield made
    yield _gauge(
        "webhooks_subscriber_disabled",
        "1 while the subscriber is disabled (410 Gone, persistent failure or an operator).",
        ((s.subscriber_id, int(s.disabled)) for s in subs),
    )
    yield _gauge(
        "webhooks_subscriber_failing_seconds",
        "How long every attempt to the subscriber has failed (0: its last one succeeded).",
        ((s.subscriber_id, s.failing_s) for s in subs),
    )
    yield _gauge(
        "webhooks_unaccounted_deliveries",
        "Deliveries fanned out that neither ended nor are open (0 when the audit balances;"
        " see `reseller-webhooks audit`).",
        ((s.subscriber_id, s.unaccounted) for s in subs),
    )


def _deployment_wide(snap: Snapshot) -> Iterable[Metric]:
    """Events not yet fanned out, and retries the scheduler has yet to take."""
    yield GaugeMetricFamily(
        "webhooks_undispatched_events",
        "Published events not yet fanned out to their subscribers.",
        value=snap.undispatched,
    )
    yield GaugeMetricFamily(
        "webhooks_oldest_undispatched_seconds",
        "Age of the oldest event not yet fanned out (0: none).",
        value=snap.oldest_undispatched_s,
    )
    yield GaugeMetricFamily(
        "webhooks_due_retries",
        "Retries (and leases of dead workers) whose time has come, not yet taken by a scheduler.",
        value=snap.due,
    )
    yield GaugeMetricFamily(
        "webhooks_scheduler_lateness_seconds",
        "How long the most overdue of those has waited (0: the scheduler is keeping up).",
        value=snap.overdue_s,
    )
    yield GaugeMetricFamily(
        "webhooks_unaccounted_events",
        "Events published that were neither fanned out nor are pending (0 when it balances).",
        value=snap.events_unaccounted,
    )
    yield CounterMetricFamily(
        "webhooks_unmatched_events",
        "Events no subscriber takes, ever (kept in Redis: the same on every worker).",
        value=snap.tally.unmatched,
    )


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
