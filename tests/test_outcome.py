"""The outcome of one attempt, as a table."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from reseller_webhooks.worker.config.subscribers import RetryPolicy
from reseller_webhooks.worker.delivery.outcome import Outcome, classify, decide
from reseller_webhooks.worker.errors import (
    PermanentDeliveryError,
    RefusedAddressError,
    RetryableDeliveryError,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "retryable_error", "extra", "expected"),
    [
        (200, False, (), Outcome.DELIVERED),
        (201, False, (), Outcome.DELIVERED),
        (204, False, (), Outcome.DELIVERED),
        (299, False, (), Outcome.DELIVERED),
        (301, False, (), Outcome.RETRY),
        (302, False, (), Outcome.RETRY),
        (308, False, (), Outcome.RETRY),
        (400, False, (), Outcome.DEAD),
        (401, False, (), Outcome.DEAD),
        (403, False, (), Outcome.DEAD),
        (404, False, (), Outcome.DEAD),
        (404, False, (404,), Outcome.RETRY),
        (408, False, (), Outcome.RETRY),
        (410, False, (), Outcome.GONE),
        (410, False, (410,), Outcome.GONE),
        (413, False, (), Outcome.DEAD),
        (422, False, (), Outcome.DEAD),
        (425, False, (), Outcome.RETRY),
        (429, False, (), Outcome.RETRY),
        (500, False, (), Outcome.RETRY),
        (502, False, (), Outcome.RETRY),
        (503, False, (), Outcome.RETRY),
        (504, False, (), Outcome.RETRY),
        (None, True, (), Outcome.RETRY),  # timeout, connection error, DNS failure
        (None, False, (), Outcome.DEAD),  # refused address, invalid URL
    ],
)
def test_classify(
    status: int | None, retryable_error: bool, extra: tuple[int, ...], expected: Outcome
) -> None:
    assert classify(status, retryable_error=retryable_error, retry_statuses=extra) is expected


POLICY = RetryPolicy(schedule_s=(0, 5, 300), jitter=0.0, retry_after_max_s=600)


@pytest.mark.parametrize(
    ("attempt", "status", "error", "retry_after", "outcome", "delay", "reason"),
    [
        (1, 200, None, None, Outcome.DELIVERED, None, ""),
        (1, 503, None, None, Outcome.RETRY, 5.0, ""),
        (2, 503, None, None, Outcome.RETRY, 300.0, ""),
        (
            3,
            503,
            None,
            None,
            Outcome.DEAD,
            None,
            "retries exhausted after 3 attempts; last: HTTP 503",
        ),
        (1, 429, None, "120", Outcome.RETRY, 120.0, ""),  # honoured: later than scheduled
        (1, 429, None, "1", Outcome.RETRY, 5.0, ""),  # never earlier than scheduled
        (1, 503, None, "99999", Outcome.RETRY, 600.0, ""),  # clamped to retry_after_max_s
        (1, 500, None, "120", Outcome.RETRY, 5.0, ""),  # only 429/503 carry a usable Retry-After
        (1, 429, None, "Sun, 22 Nov 2026 12:01:00 GMT", Outcome.RETRY, 60.0, ""),
        (1, 400, None, None, Outcome.DEAD, None, "permanent failure: HTTP 400"),
        (1, 410, None, None, Outcome.GONE, None, "subscriber disabled: HTTP 410 (410 Gone)"),
        (1, None, RetryableDeliveryError("timed out"), None, Outcome.RETRY, 5.0, ""),
        (
            1,
            None,
            RefusedAddressError("x resolves to 10.0.0.1"),
            None,
            Outcome.DEAD,
            None,
            "permanent failure: refused address: x resolves to 10.0.0.1",
        ),
        (
            1,
            None,
            PermanentDeliveryError("bad url"),
            None,
            Outcome.DEAD,
            None,
            "permanent failure: bad url",
        ),
    ],
)
def test_decide(
    attempt: int,
    status: int | None,
    error: Exception | None,
    retry_after: str | None,
    outcome: Outcome,
    delay: float | None,
    reason: str,
) -> None:
    decision = decide(
        POLICY,
        attempt,
        status=status,
        error=error,  # type: ignore[arg-type]
        retry_after=retry_after,
        now=NOW,
        rng=random.Random(1),
    )
    assert decision.outcome is outcome
    assert decision.delay_s == delay
    assert decision.reason == reason


def test_decide_scales_the_schedule() -> None:
    decision = decide(
        POLICY,
        2,
        status=503,
        error=None,
        retry_after=None,
        now=NOW,
        rng=random.Random(1),
        scale=0.001,
    )
    assert decision.delay_s == pytest.approx(0.3)
