"""The deployment's state, read from Redis at each scrape (``RedisCollector``): backlog and oldest
unfinished delivery per subscriber, dead letters held and made, disabled, failing, held and
open-breaker subscribers, undispatched events, due retries, and what is unaccounted for
(``records.tally``). One script call per scrape (``records/lua/stats.lua``), which never scans, so
every worker reports the same numbers; ``ops.metrics`` serves them."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
    #: The circuit breaker: 0 closed, 1 half-open, 2 open (docs/endpoint-health.md).
    breaker: int = 0
    #: Seconds until its next probe (0 unless open).
    next_probe_s: float = 0.0

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
                breaker=int(breaker),
                next_probe_s=int(next_probe) / 1000,
            )
            for (
                sub,
                backlog,
                oldest,
                held,
                ever,
                disabled,
                failing,
                counts,
                breaker,
                next_probe,
            ) in rows
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
    yield from _breaker_gauges(subs)
    yield _gauge(
        "webhooks_unaccounted_deliveries",
        "Deliveries fanned out that neither ended nor are open (0 when the audit balances;"
        " see `reseller-webhooks audit`).",
        ((s.subscriber_id, s.unaccounted) for s in subs),
    )


def _breaker_gauges(subs: Sequence[SubscriberStats]) -> Iterable[Metric]:
    yield _gauge(
        "webhooks_subscriber_breaker_state",
        "The subscriber's circuit breaker: 0 closed, 1 half-open (trials), 2 open (probes only).",
        ((s.subscriber_id, s.breaker) for s in subs),
    )
    yield _gauge(
        "webhooks_subscriber_breaker_next_probe_seconds",
        "Seconds until the open breaker's next probe may go (0 when closed or half-open).",
        ((s.subscriber_id, s.next_probe_s) for s in subs),
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
