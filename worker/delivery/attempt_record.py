"""What one attempt leaves in the records: its attempt-log entry, the dead letter kept in case
it was the last, and when the next one is due. Pure: the deliverer applies it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from reseller_webhooks.producers.user import format_timestamp
from reseller_webhooks.worker.delivery.outcome import Decision, Outcome
from reseller_webhooks.worker.http.sender import AttemptResult
from reseller_webhooks.worker.records.breaker import DEFAULT_BREAKER_AFTER
from reseller_webhooks.worker.records.shapes import Claim, Finish


def iso(ms: float) -> str:
    """Epoch milliseconds as the records' ISO 8601 UTC time."""
    return format_timestamp(datetime.fromtimestamp(ms / 1000, UTC))


def event_type(body: bytes) -> str:
    """The event type in an event body ('' when it cannot be read)."""
    try:
        return str(json.loads(body)["event"])
    except (ValueError, KeyError, TypeError):
        return ""


def attempt_record(
    claim: Claim,
    url: str,
    result: AttemptResult,
    decision: Decision,
    now: float,
    *,
    disable_after_s: float = 0.0,
    breaker_after: int = DEFAULT_BREAKER_AFTER,
    attempted: bool = True,
    rate_limit: float | None = None,
    pause_s: float = 0.0,
    measured_rate: float = 0.0,
) -> Finish:
    """The records of ``claim``'s attempt: ``url`` as shown (redacted), what ``result``
    observed and the ``decision`` taken on it at ``now`` (epoch seconds); the subscriber's
    ``rate_limit``, a 429's pause and the attempt rate measured go to its adaptive rate."""
    now_ms = int(now * 1000)
    delay_ms = int(decision.delay_s * 1000) if decision.delay_s is not None else None
    next_due = now_ms + delay_ms if delay_ms is not None else None
    attempt = {
        "attempt": claim.attempt,
        "at": iso(now_ms - result.duration_ms),
        "trigger": claim.trigger,
        "url": url,
        "status": result.status,
        "error": result.error_text,
        "duration_ms": round(result.duration_ms, 1),
        "response": result.response_excerpt,
        "outcome": decision.outcome.value,
        "next_due": iso(next_due) if next_due else None,
    }
    letter = None
    if decision.outcome is not Outcome.DELIVERED:  # a retry may still end in auto-disable
        letter = {
            "delivery_id": claim.delivery_id,
            "event_id": claim.event_id,
            "subscriber_id": claim.subscriber_id,
            "url": url,
            "event_type": event_type(claim.body),
            "attempts": claim.attempt,
            "dead_at": iso(now_ms),
            "body": claim.body.decode(errors="replace"),
        }
        if claim.sequence:  # kept so that a replay after the event expired sends it again
            letter["sequence"] = claim.sequence
    return Finish(
        decision.outcome.value if attempted else "skipped",
        attempt,
        delay_ms,
        decision.reason,
        letter,
        disable_after_ms=int(disable_after_s * 1000),
        breaker_after=breaker_after,
        rate_limit=rate_limit,
        pause_ms=int(pause_s * 1000),
        measured_rate=measured_rate,
    )
