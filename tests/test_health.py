"""Endpoint health's pure decisions, as tables: a 429 throttles, Retry-After pauses, the
adaptive rate grows back, the attempt rate a worker measures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reseller_webhooks.worker.config.subscribers import RetryPolicy
from reseller_webhooks.worker.delivery.health import (
    LimitState,
    RecentRate,
    Throttle,
    adaptive_rate,
    limit_state,
    throttle,
)
from reseller_webhooks.worker.delivery.outcome import Decision, Outcome

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(schedule_s=(0, 5, 300), jitter=0.0, retry_after_max_s=600)
RETRY = Decision(Outcome.RETRY, delay_s=5.0)
EXHAUSTED = Decision(Outcome.DEAD, reason="retries exhausted after 3 attempts; last: HTTP 429")


@pytest.mark.parametrize(
    ("decision", "status", "retry_after", "scale", "expected"),
    [
        (RETRY, 429, None, 1.0, Throttle(Decision(Outcome.THROTTLED, delay_s=5.0))),
        (RETRY, 429, "2", 1.0, Throttle(Decision(Outcome.THROTTLED, delay_s=5.0), 2.0)),
        (RETRY, 429, "2", 0.5, Throttle(Decision(Outcome.THROTTLED, delay_s=5.0), 1.0)),
        (RETRY, 429, "99999", 1.0, Throttle(Decision(Outcome.THROTTLED, delay_s=5.0), 600.0)),
        (RETRY, 429, "soon", 1.0, Throttle(Decision(Outcome.THROTTLED, delay_s=5.0))),
        (
            RETRY,
            429,
            "Sun, 22 Nov 2026 12:01:00 GMT",
            1.0,
            Throttle(Decision(Outcome.THROTTLED, delay_s=5.0), 60.0),
        ),
        # attempts exhausted: throttled still, its dead reason kept for after the deferrals
        (
            EXHAUSTED,
            429,
            "1",
            1.0,
            Throttle(Decision(Outcome.THROTTLED, reason=EXHAUSTED.reason), 1.0),
        ),
        (RETRY, 503, "2", 1.0, Throttle(RETRY)),  # a 503's Retry-After is the delivery's own
        (Decision(Outcome.DELIVERED), 200, "2", 1.0, Throttle(Decision(Outcome.DELIVERED))),
        (RETRY, None, None, 1.0, Throttle(RETRY)),
    ],
)
def test_throttle(
    decision: Decision,
    status: int | None,
    retry_after: str | None,
    scale: float,
    expected: Throttle,
) -> None:
    assert throttle(decision, status, retry_after, policy=POLICY, now=NOW, scale=scale) == expected


@pytest.mark.parametrize(
    ("rate", "changed_ms", "from_rate", "limit", "now_ms", "expected"),
    [
        (14.0, 0, 20.0, 20.0, 0, (14.0, False)),  # just cut
        (14.0, 0, 20.0, 20.0, 1000, (16.0, False)),  # +10 % of the limit per second
        (14.0, 0, 20.0, 20.0, 3000, (20.0, True)),  # back at the limit
        (14.0, 0, 20.0, 20.0, 60_000, (20.0, True)),  # never above it
        (2.0, 0, 3.0, 3.0, 500, (2.5, False)),  # at least 1/s
        (21.0, 0, 30.0, None, 1000, (23.1, False)),  # none configured: +10 % of the rate
        (21.0, 0, 30.0, None, 20_000, (60.0, True)),  # up to twice where it started
        (21.0, 5000, 30.0, None, 1000, (21.0, False)),  # a clock behind the change: no growth
    ],
)
def test_adaptive_rate(
    rate: float,
    changed_ms: int,
    from_rate: float | None,
    limit: float | None,
    now_ms: int,
    expected: tuple[float, bool],
) -> None:
    got, back = adaptive_rate(rate, changed_ms, from_rate, limit, now_ms)
    assert (round(got, 6), back) == expected


@pytest.mark.parametrize(
    ("fields", "limit", "expected"),
    [
        ({}, None, LimitState(None, False, 0)),  # unlimited
        ({}, 20.0, LimitState(20.0, False, 0)),
        ({"paused_until": "5000"}, None, LimitState(None, False, 5000)),
        ({"paused_until": "500"}, None, LimitState(None, False, 0)),  # over
        (
            {"rate": "14", "rate_changed_at": "0", "rate_from": "20"},
            20.0,
            LimitState(16.0, True, 0),  # +2/s for a second
        ),
        (
            {"rate": "14", "rate_changed_at": "0", "rate_from": "20"},
            10.0,
            LimitState(10.0, False, 0),
        ),
    ],
)
def test_limit_state(fields: dict[str, str], limit: float | None, expected: LimitState) -> None:
    assert limit_state(fields, limit, 1000) == expected


def test_recent_rate_counts_the_last_second_per_subscriber() -> None:
    now = [100.0]
    recent = RecentRate(clock=lambda: now[0])
    assert [recent.note("a") for _ in range(3)] == [1.0, 2.0, 3.0]
    assert recent.note("b") == 1.0
    now[0] = 100.5
    assert recent.note("a") == 4.0
    now[0] = 101.2  # the first three are more than a second old
    assert recent.note("a") == 2.0
