"""The durable delivery records in Redis: the source of truth; Celery messages only trigger them.

A delivery (one event to one subscriber) is a HASH ``{prefix}:delivery:{event_id}:{subscriber_id}``
with ``event``, ``sub``, ``state``, ``attempts``, ``trigger``, ``created``, ``lease`` and, once
finished, ``done`` and ``reason``. Every unfinished delivery is in the ``due`` ZSET, scored by the
time (ms) at which the scheduler must act on it:

    queued  --claim-->  running  --finish-->  delivered | dead          (removed from due)
      ^                    |  \\--finish-->  waiting (score = next due time)
      |                    |                    |
      +-- sweep: lease ----+                    +-- sweep: due --> queued + trigger
          expired (worker died)
      +-- sweep: queued too long while the queues are short (trigger lost) --> trigger again

Every transition is one Lua script, so two workers or two schedulers never both own a delivery.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from producers.wire import Keys
from worker import scripts


def delivery_id(event_id: str, subscriber_id: str) -> str:
    return f"{event_id}:{subscriber_id}"


def split_delivery_id(did: str) -> tuple[str, str]:
    event_id, _, subscriber_id = did.partition(":")
    return event_id, subscriber_id


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this worker now owns until ``lease`` (ms)."""

    delivery_id: str
    event_id: str
    subscriber_id: str
    attempt: int
    trigger: str
    body: bytes
    lease: int
    disabled_reason: str


@dataclass(frozen=True, slots=True)
class Finish:
    outcome: str  # delivered | retry | dead | gone | skipped
    attempt: dict[str, Any]
    next_due_ms: int | None = None
    reason: str = ""
    dead_letter: dict[str, Any] | None = None
    disable_after_ms: int = 0


class Store:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        record_retention_s: int,
        dead_letter_retention_s: int,
        attempt_log_size: int,
    ) -> None:
        self.redis = client
        self.keys = keys
        self._record_ttl = record_retention_s
        self._dead_ttl = dead_letter_retention_s
        self._log_size = attempt_log_size
        self._dispatch = client.register_script(scripts.DISPATCH)
        self._claim = client.register_script(scripts.CLAIM)
        self._extend = client.register_script(scripts.EXTEND)
        self._finish = client.register_script(scripts.FINISH)
        self._sweep = client.register_script(scripts.SWEEP)

    def dispatch(
        self,
        event_ids: Sequence[str],
        routes: Mapping[str, Sequence[str]],
        *,
        inline: Sequence[str],
        inline_limit: int,
        now_ms: int,
        lost_after_ms: int,
        lease_until_ms: int,
    ) -> tuple[list[str], list[Claim], list[str]]:
        """Fan events out in one script call: (queued delivery ids, claims, missing events).

        ``routes`` maps each event type to its subscriber ids; deliveries of the first subscriber
        in ``inline`` that an event routes to come back already claimed (up to
        ``inline_limit``), to be attempted by the caller at once.
        """
        args: list[Any] = [
            self.keys.prefix,
            now_ms,
            lost_after_ms,
            lease_until_ms,
            inline_limit,
            len(routes),
        ]
        for event_type, subscriber_ids in routes.items():
            args += [event_type, len(subscriber_ids), *subscriber_ids]
        args += [len(inline), *inline, *event_ids]
        created, claims, missing = cast(
            list[list[Any]], self._dispatch(keys=[self.keys.dispatch, self.keys.due], args=args)
        )
        return (
            [d.decode() for d in created],
            self._claims(claims, lease_until_ms),
            [e.decode() for e in missing],
        )

    @staticmethod
    def _claims(raw: Sequence[Any], lease: int) -> list[Claim]:
        claims = []
        for item in raw:
            if not item:
                continue
            did, event_id, sub, attempt, trigger, body, disabled = item
            claims.append(
                Claim(
                    delivery_id=did.decode(),
                    event_id=event_id.decode(),
                    subscriber_id=sub.decode(),
                    attempt=int(attempt),
                    trigger=trigger.decode(),
                    body=bytes(body or b""),
                    lease=lease,
                    disabled_reason=disabled.decode(),
                )
            )
        return claims

    def claim(self, delivery_ids: Sequence[str], *, lease_until_ms: int) -> list[Claim]:
        """Own the queued ones among ``delivery_ids`` until ``lease_until_ms``, in one call.

        Ids not queued (finished, waiting, or owned by another worker) are left out: their
        trigger was stale or a duplicate.
        """
        raw = self._claim(
            keys=[self.keys.due], args=[self.keys.prefix, lease_until_ms, *delivery_ids]
        )
        return self._claims(cast(list[Any], raw), lease_until_ms)

    def extend(self, claims: Sequence[Claim], *, lease_until_ms: int) -> list[Claim]:
        """Push the lease of claims still held (all share one lease) to ``lease_until_ms``."""
        if not claims:
            return []
        self._extend(
            keys=[self.keys.due],
            args=[
                self.keys.prefix,
                claims[0].lease,
                lease_until_ms,
                *(c.delivery_id for c in claims),
            ],
        )
        return [dataclasses.replace(c, lease=lease_until_ms) for c in claims]

    def finish(self, results: Sequence[tuple[Claim, Finish]], *, now_ms: int) -> list[bool]:
        """Record each attempt and move each delivery on where this worker still owns it."""
        if not results:
            return []
        args: list[Any] = [
            self.keys.prefix,
            now_ms,
            self._record_ttl,
            self._log_size,
            self._dead_ttl,
        ]
        for claim, result in results:
            args += [
                claim.delivery_id,
                claim.subscriber_id,
                claim.lease,
                result.outcome,
                json.dumps(result.attempt, separators=(",", ":")),
                result.next_due_ms or 0,
                json.dumps(result.dead_letter or {}, separators=(",", ":")),
                result.disable_after_ms,
                result.reason,
            ]
        owned = self._finish(keys=[self.keys.due, self.keys.dead], args=args)
        return [bool(o) for o in cast(list[int], owned)]

    def sweep(
        self, *, now_ms: int, lost_after_ms: int, batch: int, requeue_queued: bool
    ) -> tuple[list[str], list[str]]:
        """Atomically take what is due: deliveries to trigger again, events to dispatch again."""
        deliveries, events = cast(
            list[list[bytes]],
            self._sweep(
                keys=[self.keys.due, self.keys.dispatch],
                args=[self.keys.prefix, now_ms, lost_after_ms, batch, int(requeue_queued)],
            ),
        )
        return [d.decode() for d in deliveries], [e.decode() for e in events]

    def queue_depth(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.keys.queue)
        pipe.llen(self.keys.retry_queue)
        return sum(cast(list[int], pipe.execute()))

    def bad_message(self, task: str, reason: str, payload: Any) -> None:
        """Dead-letter a message that is not a valid trigger; the worker goes on."""
        excerpt = payload if isinstance(payload, str) else repr(payload)
        record = {
            "at_ms": int(time.time() * 1000),
            "task": task,
            "reason": reason,
            "excerpt": excerpt[:500],
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(self.keys.bad_messages, json.dumps(record))
        pipe.ltrim(self.keys.bad_messages, 0, 999)
        pipe.execute()

    def disable_subscriber(self, subscriber_id: str, reason: str) -> None:
        self.redis.hset(
            self.keys.subscriber_state(subscriber_id),
            mapping={"disabled": "1", "reason": reason, "disabled_at": int(time.time() * 1000)},
        )

    def enable_subscriber(self, subscriber_id: str) -> None:
        """Clear a disable (operator, 410 or persistent failure) and the failure streak."""
        self.redis.hset(self.keys.subscriber_state(subscriber_id), "disabled", "0")
        self.redis.hdel(
            self.keys.subscriber_state(subscriber_id), "reason", "disabled_at", "failing_since"
        )

    def failing_subscribers(self, subscriber_ids: Sequence[str]) -> frozenset[str]:
        pipe = self.redis.pipeline(transaction=False)
        for sid in subscriber_ids:
            pipe.hget(self.keys.subscriber_state(sid), "failing_since")
        return frozenset(sid for sid, v in zip(subscriber_ids, pipe.execute(), strict=True) if v)

    def subscriber_state(self, subscriber_id: str) -> dict[str, str]:
        raw = cast(
            dict[bytes, bytes], self.redis.hgetall(self.keys.subscriber_state(subscriber_id))
        )
        return {k.decode(): v.decode() for k, v in raw.items()}

    def bad_messages(self) -> list[dict[str, Any]]:
        raw = cast(list[bytes], self.redis.lrange(self.keys.bad_messages, 0, -1))
        return [json.loads(r) for r in raw]
