"""Endpoint health, the Python side of what CLAIM and FINISH decide in Lua: whether an attempt
was throttled (a 429) and how long its Retry-After pauses the subscriber, the attempt rate this
worker measures (where a 429 cuts from when no rate is configured), and the rate a subscriber is
allowed now. Pure; table-tested in tests/test_health.py."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from reseller_webhooks.worker.config.subscribers import RetryPolicy
from reseller_webhooks.worker.delivery.outcome import Decision, Outcome
from reseller_webhooks.worker.delivery.retry_schedule import parse_retry_after

#: The status that throttles.
TOO_MANY_REQUESTS = 429

#: The measured attempt rate is the count of attempts in this last window, s.
MEASURE_WINDOW_S = 1.0


@dataclass(frozen=True, slots=True)
class Throttle:
    """What a 429 does besides its outcome: the subscriber's pause (s, 0: none)."""

    decision: Decision
    pause_s: float = 0.0


def throttle(
    decision: Decision,
    status: int | None,
    retry_after: str | None,
    *,
    policy: RetryPolicy,
    now: datetime,
    scale: float = 1.0,
) -> Throttle:
    """A 429 becomes ``throttled`` whatever the schedule says; its retry delay (or dead reason,
    when attempts are exhausted) is kept for when the delivery has been deferred enough. A
    ``Retry-After`` pauses the subscriber: clamped to ``retry_after_max_s``, shrunk by
    ``scale`` like every delay. Anything else is left as decided."""
    if status != TOO_MANY_REQUESTS:
        return Throttle(decision)
    throttled = Decision(Outcome.THROTTLED, delay_s=decision.delay_s, reason=decision.reason)
    wait = parse_retry_after(retry_after, now=now)
    if wait is None or not math.isfinite(wait):
        return Throttle(throttled)
    return Throttle(throttled, min(wait, policy.retry_after_max_s) * scale)


def adaptive_rate(
    rate: float, changed_ms: int, from_rate: float | None, limit: float | None, now_ms: int
) -> tuple[float, bool]:
    """The rate (attempts/s) a subscriber is allowed after 429s, and whether it is back at its
    ceiling: ``rate`` was set at ``changed_ms`` and grows by max(1, 10 % of ``limit``, else of
    ``rate``) per second since, up to ``limit``, else up to twice ``from_rate`` (the rate the
    first cut started from). The same rule as ``adaptive_rate`` in ``records/lua/prelude.lua``."""
    step = max(1.0, 0.1 * (limit or rate))
    ceiling = limit if limit is not None else 2 * (from_rate or rate)
    grown = rate + step * max(0, now_ms - changed_ms) / 1000
    if grown >= ceiling:
        return ceiling, True
    return grown, False


@dataclass(frozen=True, slots=True)
class LimitState:
    """A subscriber's rate limit as shown: ``rate`` allowed now (None: unlimited), whether 429s
    lowered it (``adaptive``), and until when (server ms) a Retry-After pauses it (0: not)."""

    rate: float | None
    adaptive: bool
    paused_until_ms: int


def limit_state(fields: Mapping[str, str | None], limit: float | None, now_ms: int) -> LimitState:
    """The state from the subscriber hash's ``rate``, ``rate_changed_at``, ``rate_from`` and
    ``paused_until`` fields and its configured ``limit``."""
    paused = int(fields.get("paused_until") or 0)
    paused = paused if paused > now_ms else 0
    raw = fields.get("rate")
    if raw is None:
        return LimitState(limit, False, paused)
    from_rate = fields.get("rate_from")
    rate, back = adaptive_rate(
        float(raw),
        int(fields.get("rate_changed_at") or now_ms),
        float(from_rate) if from_rate else None,
        limit,
        now_ms,
    )
    return LimitState(rate, not back, paused)


class RecentRate:
    """Attempts per second this worker made to each subscriber: those of the last
    ``MEASURE_WINDOW_S`` (not extrapolated: a burst that just started measures what it sent,
    about what the receiver took before its first 429). Thread-safe; ``clock`` is monotonic
    seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def note(self, subscriber_id: str) -> float:
        """Count an attempt now; returns the rate including it."""
        now = self.clock()
        with self._lock:
            times = self._times.setdefault(subscriber_id, deque())
            times.append(now)
            while times and times[0] <= now - MEASURE_WINDOW_S:
                times.popleft()
            return len(times) / MEASURE_WINDOW_S
