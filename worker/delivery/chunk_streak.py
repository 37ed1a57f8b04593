"""A chunk stops at a failure streak: the claimed deliveries not yet attempted go back.

A deliver task attempts a claimed chunk (up to ``deliver_chunk`` deliveries) before the next
claim sees the subscriber's health. Against an endpoint that just went down, the rest of the
chunk would all be attempted; instead, ``CHUNK_STREAK`` failures in a row end the chunk and the
rest is given back (due at once, so the next SWEEP puts it back at the front of the ready
list, its attempts untouched). The next claim then obeys the failing bound and the breaker.
"""

from __future__ import annotations

from collections.abc import Sequence

from reseller_webhooks.worker.records.shapes import Claim
from reseller_webhooks.worker.records.store import Store

#: Failed attempts in a row that end a chunk (one failure alone does not: a single bad event).
CHUNK_STREAK = 2

#: The outcomes that are not failures of the endpoint (a skipped delivery was not attempted).
NOT_FAILURES = frozenset({"delivered", "skipped"})


class ChunkStreak:
    """Failures in a row within one chunk."""

    def __init__(self) -> None:
        self.failed = 0

    def ends(self, outcome: str) -> bool:
        """Count an attempt's ``outcome``; True when the chunk should stop here."""
        self.failed = 0 if outcome in NOT_FAILURES else self.failed + 1
        return self.failed >= CHUNK_STREAK


def give_back(store: Store, claims: Sequence[Claim]) -> int:
    """The leases of ``claims`` end now (SWEEP takes them back); how many were still held."""
    return len(store.extend(claims, lease_ms=0)) if claims else 0
