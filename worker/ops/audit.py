"""``reseller-webhooks audit``: does every delivery and every event add up?

The counts (``records.tally``) and the open deliveries are read in one script call (the
metrics' ``stats.lua``), so they agree with each other even while workers run. Then each
subscriber's open index is checked against the records it points at: an entry whose delivery
record is gone (deleted, evicted, expired early) or already finished is a delivery nobody will
ever send, so it is not counted open; the ids are named. Checking the entries reads every open
delivery's state (pipelined, a batch at a time): an operator's command, never a scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from reseller_webhooks.worker.ops.deployment_metrics import StatsReader
from reseller_webhooks.worker.records.store import Store
from reseller_webhooks.worker.records.tally import (
    GlobalTally,
    Tally,
    events_unaccounted,
    unaccounted,
)

#: The states of an open delivery (``Keys.open_deliveries``).
OPEN_STATES = frozenset({b"blocked", b"ready", b"running", b"waiting"})
#: Open entries read per round trip.
BATCH = 500
#: Broken entries named per subscriber (all are counted).
NAMED = 100


@dataclass(frozen=True)
class SubscriberBalance:
    subscriber_id: str
    tally: Tally
    #: Entries of the open index, and those among them pointing at no open delivery.
    indexed: int
    broken: list[str] = field(default_factory=list)
    broken_count: int = 0

    @property
    def open(self) -> int:
        return self.indexed - self.broken_count

    @property
    def unaccounted(self) -> int:
        return unaccounted(self.tally, self.open)

    def problem(self) -> str:
        """What does not add up, in a line ('' when it balances)."""
        gap = self.unaccounted
        if gap > 0:
            text = f"{gap} delivery(ies) fanned out but neither ended nor open"
        elif gap < 0:
            text = f"{-gap} more ended or open than fanned out"
            text += " (counted twice, or older than the counts)"
        else:
            return ""
        if self.broken_count:
            text += f"; {self.broken_count} open entry(ies) with no open delivery record"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "subscriber": self.subscriber_id,
            **self.tally.as_dict(),
            "open": self.open,
            "unaccounted": self.unaccounted,
            "broken_open_entries": self.broken,
        }


@dataclass(frozen=True)
class AuditReport:
    subscribers: list[SubscriberBalance]
    tally: GlobalTally
    pending: int

    @property
    def events_unaccounted(self) -> int:
        return events_unaccounted(self.tally, self.pending)

    @property
    def balanced(self) -> bool:
        return self.events_unaccounted == 0 and not any(s.unaccounted for s in self.subscribers)

    def as_dict(self) -> dict[str, Any]:
        return {
            "balanced": self.balanced,
            "events": {
                **self.tally.as_dict(),
                "pending": self.pending,
                "unaccounted": self.events_unaccounted,
            },
            "subscribers": [s.as_dict() for s in self.subscribers],
        }

    def lines(self) -> Iterator[str]:
        """The report as text, one subscriber a line, then what does not add up."""
        t = self.tally
        yield (
            f"events: published {t.published} = drained {t.drained} + pending {self.pending}"
            f" (unmatched {t.unmatched})" + ("" if not self.events_unaccounted else "  UNBALANCED")
        )
        for s in self.subscribers:
            c = s.tally
            yield (
                f"{s.subscriber_id}: fanned out {c.fanned_out} = delivered {c.delivered}"
                f" + dead {c.dead} + superseded {c.superseded} + removed {c.removed}"
                f" + erased {c.erased} + open {s.open}"
                + ("" if not s.unaccounted else "  UNBALANCED")
            )
        if self.events_unaccounted > 0:
            yield f"unaccounted: {self.events_unaccounted} event(s) published but never drained"
        elif self.events_unaccounted < 0:
            yield f"unaccounted: {-self.events_unaccounted} more drained or pending than published"
        for s in self.subscribers:
            if s.unaccounted:
                yield f"unaccounted: {s.subscriber_id}: {s.problem()}"
                if s.broken:
                    yield f"  delivery ids: {' '.join(s.broken)}"
        yield "balanced" if self.balanced else "NOT balanced"


def audit(store: Store, *, dead_ttl_s: int, subscriber_ids: Iterable[str] = ()) -> AuditReport:
    """The balance of every subscriber named or that has had deliveries, and of events."""
    snap = StatsReader(store, dead_ttl_s=dead_ttl_s).read(subscriber_ids)
    balances = []
    for s in snap.subscribers:
        broken = broken_open_entries(store, s.subscriber_id)
        balances.append(
            SubscriberBalance(s.subscriber_id, s.tally, s.backlog, broken[:NAMED], len(broken))
        )
    return AuditReport(balances, snap.tally, snap.undispatched)


def broken_open_entries(store: Store, subscriber_id: str) -> list[str]:
    """Ids in the subscriber's open index whose delivery record is missing or finished."""
    keys, r = store.keys, store.redis
    index = keys.open_deliveries(subscriber_id)
    suspects: list[bytes] = []
    batch: list[bytes] = []
    for member, _ in r.zscan_iter(index, count=BATCH):
        batch.append(member)
        if len(batch) >= BATCH:
            suspects += _not_open(store, batch)
            batch = []
    suspects += _not_open(store, batch)
    confirmed = []
    for did in suspects:  # again, atomically: it may have finished between the two reads
        pipe = r.pipeline(transaction=True)
        pipe.zscore(index, did)
        pipe.hget(keys.delivery(did.decode()), "state")
        score, state = pipe.execute()
        if score is not None and state not in OPEN_STATES:
            confirmed.append(did.decode())
    return sorted(confirmed)


def _not_open(store: Store, ids: list[bytes]) -> list[bytes]:
    if not ids:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for did in ids:
        pipe.hget(store.keys.delivery(did.decode()), "state")
    states = cast(list[bytes | None], pipe.execute())
    return [did for did, state in zip(ids, states, strict=True) if state not in OPEN_STATES]
