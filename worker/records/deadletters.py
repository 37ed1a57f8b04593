"""The dead-letter store: list, show, replay and purge deliveries that gave up.

A dead letter is ``{prefix}:dead:{delivery_id}`` (JSON: event id and type, subscriber, redacted
URL, attempts, reason, the exact body) indexed by the ``{prefix}:dead`` ZSET (scored by time of
death), with the delivery's attempt log kept as long as the letter. Replaying one makes the delivery
ready again with a fresh schedule and the same ``webhook-id`` (outside its user's ordering chain,
which moved on when it died); its attempts are logged with ``trigger: manual``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.records.shapes import Trigger, split_delivery_id
from reseller_webhooks.worker.records.store import Store

#: How many dead letters one Redis round trip reads, replays or purges.
CHUNK = 500


@dataclass(frozen=True)
class Filter:
    """Which dead letters: of one subscriber (its ``dead-of`` index) or all (the ``dead``
    index), died within ``[since_ms, until_ms]`` (server ms, inclusive), of one event type (read
    from each letter: no index)."""

    subscriber: str | None = None
    event_type: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def bounds(self) -> tuple[int | str, int | str]:
        low = self.since_ms if self.since_ms is not None else "-inf"
        high = self.until_ms if self.until_ms is not None else "+inf"
        return low, high

    def keeps(self, letter: DeadLetter) -> bool:
        """Whether a letter read from the index this filter walks passes what no index holds."""
        if self.subscriber and letter.subscriber_id != self.subscriber:
            return False
        return not self.event_type or letter.event_type == self.event_type


@dataclass(frozen=True)
class Page:
    """Dead letters newest first, from ``offset`` in the index; ``next_offset`` continues it
    (None at its end). ``read`` counts the letters read for it."""

    letters: list[DeadLetter]
    offset: int
    next_offset: int | None
    read: int


@dataclass(frozen=True)
class DeadLetter:
    delivery_id: str
    data: dict[str, Any]

    @property
    def subscriber_id(self) -> str:
        return str(self.data.get("subscriber_id", ""))

    @property
    def event_type(self) -> str:
        return str(self.data.get("event_type", ""))

    def summary(self) -> dict[str, Any]:
        """Everything but the body (which holds personal data)."""
        return {k: v for k, v in self.data.items() if k != "body"}


class DeadLetters:
    def __init__(self, store: Store, *, event_ttl_s: int) -> None:
        self.store = store
        self.keys: Keys = store.keys
        self._event_ttl = event_ttl_s

    def get(self, delivery_id: str) -> DeadLetter | None:
        raw = self.store.redis.get(self.keys.dead_letter(delivery_id))
        return DeadLetter(delivery_id, json.loads(raw)) if raw else None

    def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        raw = cast(list[bytes], self.store.redis.lrange(self.keys.attempts(delivery_id), 0, -1))
        return [json.loads(r) for r in raw]

    def index(self, chosen: Filter) -> str:
        return self.keys.dead_of(chosen.subscriber) if chosen.subscriber else self.keys.dead

    def count(self, chosen: Filter) -> int:
        """How many the index holds in the filter's time range (before the event type)."""
        return int(self.store.redis.zcount(self.index(chosen), *chosen.bounds()))

    def read(self, delivery_ids: Sequence[str]) -> list[DeadLetter | None]:
        """The letters of these ids in one round trip (None where there is none)."""
        pipe = self.store.redis.pipeline(transaction=False)
        for did in delivery_ids:
            pipe.get(self.keys.dead_letter(did))
        raws = pipe.execute()
        return [
            DeadLetter(did, json.loads(raw)) if raw else None
            for did, raw in zip(delivery_ids, raws, strict=True)
        ]

    def page(self, chosen: Filter, *, offset: int, size: int, most_read: int) -> Page:
        """Up to ``size`` letters the filter keeps, newest first, starting ``offset`` places into
        the index; reads at most ``most_read`` letters (an event-type filter may need to read
        more than it shows). Never reads the whole index."""
        low, high = chosen.bounds()
        shown: list[DeadLetter] = []
        position, read = offset, 0
        while len(shown) < size and read < most_read:
            missing = CHUNK if chosen.event_type else size - len(shown)
            want = min(CHUNK, most_read - read, missing)
            raw = cast(
                list[bytes],
                self.store.redis.zrevrangebyscore(
                    self.index(chosen), high, low, start=position, num=want
                ),
            )
            ids = [r.decode() for r in raw]
            for letter in self.read(ids):
                position += 1
                if letter is not None and chosen.keeps(letter):
                    shown.append(letter)
                    if len(shown) == size:
                        break
            read += len(ids)
            if len(ids) < want:
                return Page(shown, offset, None, read)
        return Page(shown, offset, position, read)

    def chunks(self, chosen: Filter) -> Iterator[list[str]]:
        """The ids the filter's index and time range hold, oldest first, ``CHUNK`` at a time:
        all of them are taken first (ids only), so that acting on a chunk does not move the
        next one."""
        low, high = chosen.bounds()
        ids: list[str] = []
        while True:
            raw = cast(
                list[bytes],
                self.store.redis.zrangebyscore(
                    self.index(chosen), low, high, start=len(ids), num=CHUNK * 10
                ),
            )
            ids += [r.decode() for r in raw]
            if len(raw) < CHUNK * 10:
                break
        for start in range(0, len(ids), CHUNK):
            yield ids[start : start + CHUNK]

    def find(
        self,
        chosen: Filter | None = None,
        *,
        subscriber: str | None = None,
        event_type: str | None = None,
        since_ms: int | None = None,
    ) -> Iterator[DeadLetter]:
        """Every dead letter the filter (or the fields given) keeps, oldest first, read
        ``CHUNK`` per round trip."""
        chosen = chosen or Filter(subscriber, event_type, since_ms)
        for chunk in self.chunks(chosen):
            for did, letter in zip(chunk, self.read(chunk), strict=True):
                if letter is None:  # expired between the index and the letter
                    self._unindex(did)
                elif chosen.keeps(letter):
                    yield letter

    def replay_chunk(self, delivery_ids: Sequence[str]) -> tuple[list[str], list[Trigger]]:
        """``replay`` for up to ``CHUNK`` ids in one script call."""
        if not delivery_ids:
            return [], []
        return self.store.replay_many(delivery_ids, event_ttl_s=self._event_ttl)

    def replay(self, delivery_ids: Iterable[str]) -> tuple[list[str], list[Trigger]]:
        """Make dead deliveries ready again (fresh schedule, same webhook-id).

        Returns the ids replayed and the triggers to send (``queue.triggers.send_deliver``).
        """
        wanted = list(delivery_ids)
        done: list[str] = []
        triggers: list[Trigger] = []
        for start in range(0, len(wanted), CHUNK):
            replayed, armed = self.replay_chunk(wanted[start : start + CHUNK])
            done += replayed
            triggers += armed
        return done, triggers

    def purge(self, delivery_ids: Iterable[str]) -> int:
        """Delete these dead letters and their attempt logs, ``CHUNK`` per round trip; how
        many there were."""
        wanted, count = list(delivery_ids), 0
        for start in range(0, len(wanted), CHUNK):
            count += self.purge_chunk(wanted[start : start + CHUNK])
        return count

    def purge_chunk(self, delivery_ids: Sequence[str]) -> int:
        pipe = self.store.redis.pipeline(transaction=True)
        for did in delivery_ids:
            pipe.zrem(self.keys.dead, did)
            pipe.zrem(self.keys.dead_of(split_delivery_id(did)[1]), did)
            pipe.delete(self.keys.dead_letter(did), self.keys.attempts(did))
        return sum(int(r) for r in pipe.execute()[0::3])

    def _unindex(self, did: str) -> None:
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.dead, did)
        pipe.zrem(self.keys.dead_of(split_delivery_id(did)[1]), did)
        pipe.execute()
