"""The dead-letter store: list, show, replay and purge deliveries that gave up.

A dead letter is ``{prefix}:dead:{delivery_id}`` (JSON: event id and type, subscriber, redacted
URL, attempts, reason, the exact body) indexed by the ``{prefix}:dead`` ZSET (scored by time of
death), with the delivery's attempt log kept as long as the letter. Replaying one makes the delivery
ready again with a fresh schedule and the same ``webhook-id`` (outside its user's ordering chain,
which moved on when it died); its attempts are logged with ``trigger: manual``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.records.store import Store, Trigger, split_delivery_id


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

    def ids(self, *, since_ms: int | None = None) -> list[str]:
        low = since_ms if since_ms is not None else "-inf"
        raw = cast(list[bytes], self.store.redis.zrangebyscore(self.keys.dead, low, "+inf"))
        return [r.decode() for r in raw]

    def get(self, delivery_id: str) -> DeadLetter | None:
        raw = self.store.redis.get(self.keys.dead_letter(delivery_id))
        return DeadLetter(delivery_id, json.loads(raw)) if raw else None

    def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        raw = cast(list[bytes], self.store.redis.lrange(self.keys.attempts(delivery_id), 0, -1))
        return [json.loads(r) for r in raw]

    def find(
        self,
        *,
        subscriber: str | None = None,
        event_type: str | None = None,
        since_ms: int | None = None,
    ) -> Iterator[DeadLetter]:
        for did in self.ids(since_ms=since_ms):
            letter = self.get(did)
            if letter is None:  # expired between the index and the letter
                self._unindex(did)
                continue
            if subscriber and letter.subscriber_id != subscriber:
                continue
            if event_type and letter.event_type != event_type:
                continue
            yield letter

    def replay(self, delivery_ids: Iterable[str]) -> tuple[list[str], list[Trigger]]:
        """Make dead deliveries ready again (fresh schedule, same webhook-id).

        Returns the ids replayed and the triggers to send (``queue.triggers.send_deliver``).
        """
        done: list[str] = []
        triggers: list[Trigger] = []
        for did in delivery_ids:
            armed = self.store.replay(did, event_ttl_s=self._event_ttl)
            if armed is not None:
                done.append(did)
                triggers += armed
        return done, triggers

    def purge(self, delivery_ids: Iterable[str]) -> int:
        count = 0
        for did in delivery_ids:
            pipe = self.store.redis.pipeline(transaction=True)
            pipe.zrem(self.keys.dead, did)
            pipe.zrem(self.keys.dead_of(split_delivery_id(did)[1]), did)
            pipe.delete(self.keys.dead_letter(did), self.keys.attempts(did))
            count += int(pipe.execute()[0])
        return count

    def _unindex(self, did: str) -> None:
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.zrem(self.keys.dead, did)
        pipe.zrem(self.keys.dead_of(split_delivery_id(did)[1]), did)
        pipe.execute()
