"""The dead-letter store: list, show, replay and purge deliveries that gave up.

A dead letter is ``{prefix}:dead:{delivery_id}`` (JSON: event id and type, subscriber, redacted
URL, attempts, reason, the exact body) indexed by the ``{prefix}:dead`` ZSET (scored by time of
death), with the delivery's attempt log kept as long as the letter. Replaying one puts the delivery
back in the queue with a fresh schedule and the same ``webhook-id``; its attempts are logged with
``trigger: manual``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from producers.wire import Keys
from worker.store import Store

# KEYS: due, dead. ARGV: prefix, did, lost_after, event ttl.
_REPLAY = """
local prefix, did = ARGV[1], ARGV[2]
local letter = redis.call('GET', prefix .. ':dead:' .. did)
if not letter then return 0 end
local data = cjson.decode(letter)
local key = prefix .. ':delivery:' .. did
local ekey = prefix .. ':event:' .. data['event_id']
if redis.call('EXISTS', ekey) == 0 then
  redis.call('HSET', ekey, 'type', data['event_type'], 'body', data['body'])
  redis.call('EXPIRE', ekey, ARGV[4])
end
redis.call('HSET', key, 'event', data['event_id'], 'sub', data['subscriber_id'],
           'state', 'queued', 'attempts', 0, 'trigger', 'manual')
redis.call('HDEL', key, 'reason', 'done', 'next')
redis.call('PERSIST', key)
redis.call('ZADD', KEYS[1], ARGV[3], did)
redis.call('ZREM', KEYS[2], did)
redis.call('DEL', prefix .. ':dead:' .. did)
return 1
"""


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
    def __init__(self, store: Store, *, visibility_timeout_s: float, event_ttl_s: int) -> None:
        self.store = store
        self.keys: Keys = store.keys
        self._visibility_ms = int(visibility_timeout_s * 1000)
        self._event_ttl = event_ttl_s
        self._replay = store.redis.register_script(_REPLAY)

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
                self.store.redis.zrem(self.keys.dead, did)
                continue
            if subscriber and letter.subscriber_id != subscriber:
                continue
            if event_type and letter.event_type != event_type:
                continue
            yield letter

    def replay(self, delivery_ids: Iterable[str]) -> list[str]:
        """Requeue dead deliveries (fresh schedule, same webhook-id); returns those requeued."""
        lost_after = int(time.time() * 1000) + self._visibility_ms
        done = []
        for did in delivery_ids:
            if self._replay(
                keys=[self.keys.due, self.keys.dead],
                args=[self.keys.prefix, did, lost_after, self._event_ttl],
            ):
                done.append(did)
        return done

    def purge(self, delivery_ids: Iterable[str]) -> int:
        count = 0
        for did in delivery_ids:
            pipe = self.store.redis.pipeline(transaction=True)
            pipe.zrem(self.keys.dead, did)
            pipe.delete(self.keys.dead_letter(did), self.keys.attempts(did))
            count += int(pipe.execute()[0])
        return count
