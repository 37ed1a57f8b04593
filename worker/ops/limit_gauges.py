"""The rate-limit gauges: each subscriber's allowed attempts per second now (configured, or
lowered by 429s) and how long a Retry-After still pauses it, read from Redis at each scrape."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import redis
from prometheus_client.core import GaugeMetricFamily, Metric

from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.delivery.health import LimitState, limit_state
from reseller_webhooks.worker.records.store import Store

log = logging.getLogger("reseller_webhooks.worker.ops.metrics")

#: The subscriber hash's fields the limits are worked out from.
FIELDS = ("rate", "rate_changed_at", "rate_from", "paused_until")


def read_limits(
    client: redis.Redis, keys: Keys, rate_limits: Mapping[str, float | None]
) -> dict[str, LimitState]:
    """Each configured subscriber's limits, in one round trip (on Redis's clock)."""
    pipe = client.pipeline(transaction=False)
    for sub in rate_limits:
        pipe.hmget(keys.subscriber_state(sub), FIELDS)
    pipe.time()
    *rows, (seconds, micros) = pipe.execute()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    return {
        sub: limit_state(
            {f: v.decode() for f, v in zip(FIELDS, row, strict=True) if v is not None},
            limit,
            now_ms,
        )
        for (sub, limit), row in zip(rate_limits.items(), rows, strict=True)
    }


def limit_metrics(store: Store, rate_limits: Mapping[str, float | None]) -> Iterable[Metric]:
    """The gauges (none when Redis cannot be read: ``webhooks_redis_up`` says so)."""
    try:
        states = read_limits(store.redis, store.keys, rate_limits)
    except redis.RedisError as exc:
        log.warning("metrics: cannot read the rate limits (%s)", type(exc).__name__)
        return
    rate = GaugeMetricFamily(
        "webhooks_subscriber_rate_limit",
        "Attempts per second the subscriber is allowed now, across every worker: its"
        " rate_limit_per_s, or lower after 429s (no sample: unlimited).",
        labels=["subscriber"],
    )
    paused = GaugeMetricFamily(
        "webhooks_subscriber_paused",
        "1 while a Retry-After pauses every delivery to the subscriber.",
        labels=["subscriber"],
    )
    for sub, state in states.items():
        if state.rate is not None:
            rate.add_metric([sub], state.rate)
        paused.add_metric([sub], int(state.paused_until_ms > 0))
    yield rate
    yield paused
