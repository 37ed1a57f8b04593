"""Backoff, jitter and Retry-After: pure functions, checked over many inputs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reseller_webhooks.worker.config.subscribers import STANDARD_SCHEDULE_S, RetryPolicy
from reseller_webhooks.worker.delivery.retry_schedule import (
    jittered,
    next_delay_s,
    parse_retry_after,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_default_policy_is_the_standard_webhooks_schedule() -> None:
    policy = RetryPolicy()
    assert policy.schedule_s == (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert policy.schedule_s == STANDARD_SCHEDULE_S
    assert policy.jitter == 0.2
    delays = [
        next_delay_s(policy.model_copy(update={"jitter": 0}), n, rng=random.Random())
        for n in range(11)
    ]
    assert delays == [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400, None]
    # About three days (75.6 h) from the first attempt to the last.
    assert sum(d for d in delays if d) / 3600 == pytest.approx(75.58, abs=0.01)


@given(
    delay=st.floats(min_value=0, max_value=10 * 86400, allow_nan=False),
    jitter=st.floats(min_value=0, max_value=0.99),
    seed=st.integers(),
)
def test_jitter_stays_within_its_bounds(delay: float, jitter: float, seed: int) -> None:
    value = jittered(delay, jitter, random.Random(seed))
    assert delay * (1 - jitter) - 1e-9 <= value <= delay * (1 + jitter) + 1e-9
    assert value >= 0


@given(
    attempt=st.integers(min_value=0, max_value=9),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=1e7)),
    seed=st.integers(),
)
def test_retry_after_never_shortens_nor_exceeds_the_cap(
    attempt: int, retry_after: float | None, seed: int
) -> None:
    policy = RetryPolicy(jitter=0.2, retry_after_max_s=3600)
    delay = next_delay_s(policy, attempt, rng=random.Random(seed), retry_after_s=retry_after)
    assert delay is not None
    scheduled = jittered(policy.schedule_s[attempt], 0.2, random.Random(seed))
    assert delay >= scheduled - 1e-6
    assert delay <= max(scheduled, 3600) + 1e-6


@given(seconds=st.integers(min_value=0, max_value=10**9))
def test_retry_after_delta_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds), now=NOW) == seconds


@given(offset=st.integers(min_value=-86400, max_value=7 * 86400))
def test_retry_after_http_date(offset: int) -> None:
    header = format_datetime(NOW + timedelta(seconds=offset), usegmt=True)
    assert parse_retry_after(header, now=NOW) == max(0, offset)


@pytest.mark.parametrize("garbage", ["", "soon", "-5", "1.5", "Mon, 99 Foo 2026", "\x00"])
def test_retry_after_garbage_is_ignored(garbage: str) -> None:
    assert parse_retry_after(garbage, now=NOW) is None


@given(st.text(max_size=40))
def test_retry_after_never_raises(text: str) -> None:
    value = parse_retry_after(text, now=NOW)
    assert value is None or value >= 0
