"""When to try again: pure functions of the policy, the attempt number and the response."""

from __future__ import annotations

import email.utils
import math
import random
from datetime import UTC, datetime

from reseller_webhooks.worker.config.subscribers import RetryPolicy


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def jittered(delay_s: float, jitter: float, rng: random.Random) -> float:
    """``delay_s`` moved by up to +-``jitter`` (a fraction), never negative."""
    if delay_s <= 0 or jitter <= 0:
        return max(0.0, delay_s)
    return delay_s * (1 + rng.uniform(-jitter, jitter))


def next_delay_s(
    policy: RetryPolicy,
    attempts_made: int,
    *,
    rng: random.Random,
    retry_after_s: float | None = None,
    scale: float = 1.0,
) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` attempts, or None when exhausted.

    ``schedule_s[n]`` is the delay before attempt ``n + 1``; entry 0 (the first attempt) is 0.
    A ``Retry-After`` is honoured but clamped: never earlier than the scheduled (jittered) delay,
    never later than ``retry_after_max_s``. ``scale`` shrinks the whole schedule (tests, demos).
    """
    if attempts_made >= policy.max_attempts:
        return None
    scheduled = jittered(policy.schedule_s[attempts_made], policy.jitter, rng)
    if retry_after_s is not None and math.isfinite(retry_after_s):
        scheduled = max(scheduled, min(retry_after_s, policy.retry_after_max_s))
    return scheduled * scale
