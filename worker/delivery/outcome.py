"""What one attempt's result means: a pure decision, table-tested in tests/test_outcome.py."""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from reseller_webhooks.worker.config.subscribers import RetryPolicy
from reseller_webhooks.worker.delivery.retry_schedule import next_delay_s, parse_retry_after
from reseller_webhooks.worker.errors import DeliveryError, RetryableDeliveryError

#: Statuses that mean "try again later" besides every 5xx.
RETRYABLE_STATUSES = frozenset({408, 425, 429})


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # try again on the schedule
    DEAD = "dead"  # dead-letter now; another attempt would fail the same way
    GONE = "gone"  # 410: dead-letter and disable the subscriber
    #: 429: the subscriber slows down for every worker; the delivery goes back in line without
    #: counting an attempt (a few times; then it is a retry with ``delay_s``, see health.py)
    THROTTLED = "throttled"


def classify(
    status: int | None, *, retryable_error: bool = False, retry_statuses: Collection[int] = ()
) -> Outcome:
    """Decide from an HTTP status, or (``status=None``) from a transport error.

    ``retryable_error`` says whether the transport error is worth retrying (timeouts, connection
    errors, DNS failures are; a refused address is not). ``retry_statuses`` are extra 4xx statuses
    a subscriber asked to have retried.
    """
    if status is None:
        return Outcome.RETRY if retryable_error else Outcome.DEAD
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.GONE
    if status >= 500 or status in RETRYABLE_STATUSES or status in retry_statuses:
        return Outcome.RETRY
    if 400 <= status < 500:
        return Outcome.DEAD
    # 3xx: a failure (redirects are never followed), retried like the spec's other failures,
    # since a temporary redirect (maintenance) may clear.
    return Outcome.RETRY


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    delay_s: float | None = None  # set when outcome is RETRY
    reason: str = ""  # set when the delivery ends undelivered


def describe(status: int | None, error_text: str | None) -> str:
    return f"HTTP {status}" if status is not None else (error_text or "no response")


def decide(
    policy: RetryPolicy,
    attempt: int,
    *,
    status: int | None,
    error: DeliveryError | None,
    retry_after: str | None,
    now: datetime,
    rng: random.Random,
    scale: float = 1.0,
) -> Decision:
    """Outcome of attempt ``attempt`` (1-based) and, for a retry, the delay before the next."""
    outcome = classify(
        status,
        retryable_error=isinstance(error, RetryableDeliveryError),
        retry_statuses=policy.retry_statuses,
    )
    what = describe(status, error.reason if error else None)
    if outcome is Outcome.DELIVERED:
        return Decision(outcome)
    if outcome is Outcome.GONE:
        return Decision(outcome, reason=f"subscriber disabled: {what} (410 Gone)")
    if outcome is Outcome.DEAD:
        return Decision(outcome, reason=f"permanent failure: {what}")
    honoured = parse_retry_after(retry_after, now=now) if status in (429, 503) else None
    delay = next_delay_s(policy, attempt, rng=rng, retry_after_s=honoured, scale=scale)
    if delay is None:
        return Decision(
            Outcome.DEAD, reason=f"retries exhausted after {attempt} attempts; last: {what}"
        )
    return Decision(Outcome.RETRY, delay_s=delay)
