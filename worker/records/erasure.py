"""Erasing one user's data at their request (``reseller-webhooks users forget``).

A user's events are found wherever they are recorded: the event records that name the user
(found by scanning the event keys: an operator's command, not a hot path), the console's index
of the user's latest events, and the dead letters whose body is about the user (their event
record may have expired). The erase script (``lua/erase.lua``) then, per event: drops the body
and the user from the event record, cancels the deliveries still open (``erased``, counted for
the audit), strips the response excerpts from the attempt logs, deletes the dead letters, and
takes an event not yet drained off the pending list. What stays is ids, times, states, reasons
and outcomes, so the audit still balances.

A delivery in flight at that moment (its POST already under way) may still arrive once; its
attempt is not logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from reseller_webhooks.worker.records import scripts
from reseller_webhooks.worker.records.store import Store

#: The reason an erased delivery records.
ERASED_REASON = "erased at the user's request"
#: Events per script call.
CHUNK = 200


@dataclass(frozen=True, slots=True)
class Erased:
    events: int
    cancelled: int
    dead_letters: int
    attempt_logs: int


@dataclass(frozen=True, slots=True)
class Preview:
    """What ``forget`` would take, counted without changing anything."""

    events: int
    open_deliveries: int
    dead_letters: int


#: The delivery states ``forget`` cancels (as ``lua/erase.lua``).
OPEN_STATES = frozenset({b"blocked", b"ready", b"running", b"waiting"})


class Erasure:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._erase = scripts.register(store.redis, "erase")

    def event_ids(self, user_id: str) -> list[str]:
        """Every event recorded about ``user_id``, by event record, console index and dead
        letter."""
        k, r = self.store.keys, self.store.redis
        found = {e.decode() for e in cast(list[bytes], r.lrange(k.user_events(user_id), 0, -1))}
        batch: list[bytes] = []
        for key in r.scan_iter(match=k.event("*"), count=1000):
            batch.append(key)
            if len(batch) >= 500:
                found |= self._named(batch, user_id)
                batch = []
        found |= self._named(batch, user_id)
        for did in cast(list[bytes], r.zrange(k.dead, 0, -1)):
            raw = r.get(k.dead_letter(did.decode()))
            if raw and _about(json.loads(raw), user_id):
                found.add(json.loads(raw)["event_id"])
        return sorted(found)

    def _named(self, keys: list[bytes], user_id: str) -> set[str]:
        if not keys:
            return set()
        pipe = self.store.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "user")
        users = pipe.execute()
        start = len(self.store.keys.event(""))
        return {
            key.decode()[start:]
            for key, user in zip(keys, users, strict=True)
            if user == user_id.encode()
        }

    def _subscribers(self, subscriber_ids: Iterable[str]) -> list[str]:
        """The subscribers given and every one that has had deliveries."""
        active = cast(set[bytes], self.store.redis.smembers(self.store.keys.active_subscribers))
        return sorted(set(subscriber_ids) | {s.decode() for s in active})

    def preview(self, user_id: str, subscriber_ids: Iterable[str]) -> Preview:
        """What ``forget`` would take: the user's events, their deliveries still open (to be
        cancelled) and their dead letters; reads only."""
        k, subs = self.store.keys, self._subscribers(subscriber_ids)
        events = self.event_ids(user_id)
        open_count = letters = 0
        for start in range(0, len(events), CHUNK):
            pipe = self.store.redis.pipeline(transaction=False)
            for eid in events[start : start + CHUNK]:
                for sub in subs:
                    pipe.hget(k.delivery(f"{eid}:{sub}"), "state")
                    pipe.exists(k.dead_letter(f"{eid}:{sub}"))
            answers = pipe.execute()
            open_count += sum(1 for state in answers[0::2] if state in OPEN_STATES)
            letters += sum(int(n) for n in answers[1::2])
        return Preview(len(events), open_count, letters)

    def forget(self, user_id: str, subscriber_ids: Iterable[str]) -> Erased:
        """Erase ``user_id``'s data (see the module doc); running it again changes nothing."""
        k = self.store.keys
        subs = self._subscribers(subscriber_ids)
        events = self.event_ids(user_id)
        totals = [0, 0, 0, 0]
        for start in range(0, max(len(events), 1), CHUNK):
            args: list[Any] = [k.prefix, self.store.record_retention_s, ERASED_REASON, user_id]
            args += [len(subs), *subs, *events[start : start + CHUNK]]
            done = cast(list[int], self._erase(keys=[k.due, k.dead, k.pending], args=args))
            totals = [t + int(d) for t, d in zip(totals, done, strict=True)]
        return Erased(*totals)


def _about(letter: dict[str, Any], user_id: str) -> bool:
    """Whether a dead letter's body is an event about ``user_id``."""
    try:
        data = json.loads(letter.get("body") or "{}").get("data") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(data, dict) and data.get("id") == user_id
