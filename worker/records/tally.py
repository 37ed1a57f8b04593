"""The audit's counts: what the transitions count, and whether it balances.

Every delivery a drain creates is counted ``fanned_out`` for its subscriber in the same script
call; every delivery that ends is counted once by the script that ends it: ``delivered``,
``dead`` (a replay takes it back: the delivery is open again), ``superseded`` (coalescing),
``erased`` (a user's data forgotten, ``lua/erase.lua``) and ``removed`` (reserved for a delivery
an operator takes out of the records; no transition does so today). A script counts a state
change only when it makes one, so a call retried after a lost reply counts nothing twice. What
is still open is not counted but read from the subscriber's open index
(``Keys.open_deliveries``), so::

    fanned_out == delivered + dead + superseded + removed + erased + open

Deployment-wide, every event recorded for delivery (a publish, or an operational event) is
counted ``published``; every event a drain takes off the pending list ``drained``, and those no
subscriber takes also ``unmatched``::

    published == drained + pending

A difference is deliveries (or events) unaccounted for: more than zero means some went missing
from the records (a deleted or evicted key, a Redis that lost writes); less than zero means
ends were counted that were never fanned out, as for deliveries created before the counts
existed. These are pure functions of the counts; ``ops.audit`` reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Any

#: A subscriber's counts, in the order ``records/lua/stats.lua`` reads them.
FIELDS = ("fanned_out", "delivered", "dead", "superseded", "removed", "erased")
#: The deployment's counts, in the order ``records/lua/stats.lua`` reads them.
GLOBAL_FIELDS = ("published", "drained", "unmatched")


@dataclass(frozen=True, slots=True)
class Tally:
    """One subscriber's counts."""

    fanned_out: int = 0
    delivered: int = 0
    dead: int = 0
    superseded: int = 0
    removed: int = 0
    erased: int = 0

    @classmethod
    def of(cls, raw: Sequence[Any]) -> Tally:
        return cls(*(int(v or 0) for v in raw))

    @property
    def ended(self) -> int:
        return sum(astuple(self)[1:])

    def as_dict(self) -> dict[str, int]:
        return dict(zip(FIELDS, astuple(self), strict=True))


@dataclass(frozen=True, slots=True)
class GlobalTally:
    """The deployment's counts."""

    published: int = 0
    drained: int = 0
    unmatched: int = 0

    @classmethod
    def of(cls, raw: Sequence[Any]) -> GlobalTally:
        return cls(*(int(v or 0) for v in raw))

    def as_dict(self) -> dict[str, int]:
        return dict(zip(GLOBAL_FIELDS, astuple(self), strict=True))


def unaccounted(tally: Tally, open_count: int) -> int:
    """Deliveries fanned out that neither ended nor are open (negative: ends counted beyond
    what was fanned out)."""
    return tally.fanned_out - tally.ended - open_count


def events_unaccounted(tally: GlobalTally, pending: int) -> int:
    """Events published that were neither drained nor are pending."""
    return tally.published - tally.drained - pending
