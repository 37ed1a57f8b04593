"""What the record scripts take and give back: claims, triggers, finished attempts, fan-out and
sweep results, and the ids and times they carry (``records.store`` runs the scripts)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reseller_webhooks.worker.records.breaker import DEFAULT_BREAKER_AFTER


def iso_ms(ms: int) -> str:
    """RFC 3339 in UTC with milliseconds: the text of the times the scripts write for people."""
    at = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def delivery_id(event_id: str, subscriber_id: str) -> str:
    return f"{event_id}:{subscriber_id}"


def split_delivery_id(did: str) -> tuple[str, str]:
    event_id, _, subscriber_id = did.partition(":")
    return event_id, subscriber_id


@dataclass(frozen=True, slots=True)
class Trigger:
    """A deliver trigger a script armed: the caller sends it as a Celery message."""

    subscriber_id: str
    token: str
    failing: bool


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this worker owns while ``lease`` (server ms, the ownership token) holds."""

    delivery_id: str
    event_id: str
    subscriber_id: str
    attempt: int
    trigger: str
    body: bytes
    lease: int
    #: Local monotonic time by which the lease has certainly ended (taken before the claim).
    expires_at: float
    #: When the event was published (server ms; 0 when unknown).
    published_at: int = 0
    #: The event's number in its user's sequence (``webhook-sequence``; 0: none).
    sequence: int = 0
    #: The publisher's W3C ``traceparent`` ('' for none), the parent of the attempt's span.
    traceparent: str = ""

    def server_ms(self, monotonic: float) -> float:
        """The Redis server's clock (ms) at local monotonic time ``monotonic``, give or take the
        claim's round trip: the lease ends ``lease`` on the server and by ``expires_at`` here."""
        return self.lease - (self.expires_at - monotonic) * 1000


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    claims: list[Claim]
    more: list[Trigger]
    disabled_reason: str
    #: A gate (pause, rate tokens) withholds the subscriber this long, ms; the slot is kept
    #: (the caller sleeps it out and claims again). 0: not held.
    hold_ms: int = 0


@dataclass(frozen=True, slots=True)
class Drained:
    events: int
    missing: int
    triggers: list[Trigger]
    more: bool
    #: Events no subscriber takes (counted ``unmatched`` in the tally).
    unmatched: int = 0


@dataclass(frozen=True, slots=True)
class Swept:
    triggers: list[Trigger]
    dispatch: bool
    moved: int
    #: How late (ms) each retry it made ready was, against its due time.
    late_ms: list[int] = dataclasses.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Route:
    """One subscriber an event type goes to, with its ordering choices."""

    subscriber_id: str
    ordered: bool
    coalesce: bool


@dataclass(frozen=True, slots=True)
class Finish:
    outcome: str  # delivered | retry | dead | gone | skipped | throttled
    attempt: dict[str, Any]
    delay_ms: int | None = None
    reason: str = ""
    dead_letter: dict[str, Any] | None = None
    disable_after_ms: int = 0
    #: The subscriber's configured ``rate_limit_per_s`` (None: none), for its adaptive rate.
    rate_limit: float | None = None
    #: A 429's Retry-After: the whole subscriber pauses this long, ms (0: none).
    pause_ms: int = 0
    #: Attempts/s this worker made to the subscriber lately (0: unknown), where a 429 cuts from.
    measured_rate: float = 0.0
    #: Failed attempts in a row that open the subscriber's breaker.
    breaker_after: int = DEFAULT_BREAKER_AFTER


def triggers_of(raw: Sequence[Any]) -> list[Trigger]:
    return [Trigger(sub.decode(), token.decode(), bool(failing)) for sub, token, failing in raw]
