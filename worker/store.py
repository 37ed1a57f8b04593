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

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from producers.wire import Keys

_FAN_OUT = """
local prefix, now, lost_after = ARGV[1], ARGV[2], ARGV[3]
local i, created = 5, {}
for _ = 1, tonumber(ARGV[4]) do
  local eid, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  if redis.call('ZSCORE', KEYS[1], eid) then
    for s = 0, n - 1 do
      local did = eid .. ':' .. ARGV[i + s]
      local key = prefix .. ':delivery:' .. did
      if redis.call('EXISTS', key) == 0 then
        redis.call('HSET', key, 'event', eid, 'sub', ARGV[i + s], 'state', 'queued',
                   'attempts', 0, 'trigger', 'scheduled', 'created', now)
        redis.call('ZADD', KEYS[2], lost_after, did)
        created[#created + 1] = did
      end
    end
    redis.call('ZREM', KEYS[1], eid)
  end
  i = i + n
end
return created
"""

_CLAIM = """
local prefix, did = ARGV[1], ARGV[3]
local key = prefix .. ':delivery:' .. did
local rec = redis.call('HMGET', key, 'state', 'event', 'sub', 'trigger')
if rec[1] ~= 'queued' then return false end
local n = redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'state', 'running', 'lease', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[2], did)
local body = redis.call('HGET', prefix .. ':event:' .. rec[2], 'body') or ''
local sub = redis.call('HMGET', prefix .. ':subscriber:' .. rec[3], 'disabled', 'reason')
local disabled = ''
if sub[1] == '1' then disabled = sub[2] or 'subscriber disabled' end
return {rec[2], rec[3], n, rec[4] or 'scheduled', body, disabled}
"""

# KEYS: due, attempts, dead, subscriber state
# ARGV: prefix, did, lease, outcome, now, attempt json, next due, retention, log size,
#       dead letter json, dead letter retention, disable after (ms), reason
_FINISH = """
local prefix, did, lease, outcome, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = prefix .. ':delivery:' .. did
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[9]), -1)
redis.call('EXPIRE', KEYS[2], ARGV[8])
local cur = redis.call('HMGET', key, 'state', 'lease')
if cur[1] ~= 'running' or cur[2] ~= lease then return 0 end
local reason = ARGV[13]
if outcome == 'delivered' then
  redis.call('HDEL', KEYS[4], 'failing_since')
elseif outcome ~= 'skipped' then
  redis.call('HSETNX', KEYS[4], 'failing_since', now)
  local since = tonumber(redis.call('HGET', KEYS[4], 'failing_since'))
  if outcome == 'gone' then
    redis.call('HSET', KEYS[4], 'disabled', '1', 'reason', reason, 'disabled_at', now)
  elseif tonumber(now) - since >= tonumber(ARGV[12]) then
    reason = 'subscriber disabled: every attempt failed for ' ..
             math.floor((tonumber(now) - since) / 1000) .. ' s'
    redis.call('HSET', KEYS[4], 'disabled', '1', 'reason', reason, 'disabled_at', now)
    outcome = 'dead'
  end
end
if outcome == 'delivered' then
  redis.call('HSET', key, 'state', 'delivered', 'done', now)
  redis.call('ZREM', KEYS[1], did)
  redis.call('EXPIRE', key, ARGV[8])
elseif outcome == 'retry' then
  redis.call('HSET', key, 'state', 'waiting', 'next', ARGV[7])
  redis.call('ZADD', KEYS[1], ARGV[7], did)
else
  redis.call('HSET', key, 'state', 'dead', 'done', now, 'reason', reason)
  redis.call('ZREM', KEYS[1], did)
  redis.call('EXPIRE', key, ARGV[11])
  redis.call('EXPIRE', KEYS[2], ARGV[11])
  local letter = cjson.decode(ARGV[10])
  letter['reason'] = reason
  redis.call('SET', prefix .. ':dead:' .. did, cjson.encode(letter), 'EX', ARGV[11])
  redis.call('ZADD', KEYS[3], now, did)
end
return 1
"""

# KEYS: due, dispatch. ARGV: prefix, now, lost_after, batch, requeue queued (0/1)
_SWEEP = """
local prefix, now, lost_after, batch, requeue = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local deliveries, events = {}, {}
for _, did in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, batch)) do
  local key = prefix .. ':delivery:' .. did
  local state = redis.call('HGET', key, 'state')
  if state == 'waiting' or state == 'running' or (state == 'queued' and requeue == '1') then
    redis.call('HSET', key, 'state', 'queued')
    redis.call('ZADD', KEYS[1], lost_after, did)
    deliveries[#deliveries + 1] = did
  elseif state == 'queued' then
    redis.call('ZADD', KEYS[1], lost_after, did)
  else
    redis.call('ZREM', KEYS[1], did)
  end
end
for _, eid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, batch)) do
  redis.call('ZADD', KEYS[2], lost_after, eid)
  if requeue == '1' then events[#events + 1] = eid end
end
return {deliveries, events}
"""


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
        self._fan_out = client.register_script(_FAN_OUT)
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)
        self._sweep = client.register_script(_SWEEP)

    def load_event_types(self, event_ids: Sequence[str]) -> list[str | None]:
        pipe = self.redis.pipeline(transaction=False)
        for eid in event_ids:
            pipe.hget(self.keys.event(eid), "type")
        return [v.decode() if v else None for v in pipe.execute()]

    def fan_out(
        self, routes: Iterable[tuple[str, Sequence[str]]], *, now_ms: int, lost_after_ms: int
    ) -> list[str]:
        """Create the delivery records of each event atomically; returns the new delivery ids."""
        args: list[Any] = [self.keys.prefix, now_ms, lost_after_ms, 0]
        count = 0
        for event_id, subscriber_ids in routes:
            args += [event_id, len(subscriber_ids), *subscriber_ids]
            count += 1
        args[3] = count
        created = self._fan_out(keys=[self.keys.dispatch, self.keys.due], args=args)
        return [d.decode() for d in cast(list[bytes], created)]

    def drop_dispatch(self, event_id: str) -> None:
        self.redis.zrem(self.keys.dispatch, event_id)

    def claim(self, did: str, *, lease_until_ms: int) -> Claim | None:
        """Own a queued delivery until ``lease_until_ms``; None if it is not queued (any more)."""
        raw = self._claim(keys=[self.keys.due], args=[self.keys.prefix, lease_until_ms, did])
        if not raw:
            return None
        event_id, sub, attempt, trigger, body, disabled = raw
        return Claim(
            delivery_id=did,
            event_id=event_id.decode(),
            subscriber_id=sub.decode(),
            attempt=int(attempt),
            trigger=trigger.decode(),
            body=bytes(body),
            lease=lease_until_ms,
            disabled_reason=disabled.decode(),
        )

    def finish(self, claim: Claim, result: Finish, *, now_ms: int, disable_after_ms: int) -> bool:
        """Record the attempt and move the delivery on, if this worker still owns it."""
        owned = self._finish(
            keys=[
                self.keys.due,
                self.keys.attempts(claim.delivery_id),
                self.keys.dead,
                self.keys.subscriber_state(claim.subscriber_id),
            ],
            args=[
                self.keys.prefix,
                claim.delivery_id,
                claim.lease,
                result.outcome,
                now_ms,
                json.dumps(result.attempt, separators=(",", ":")),
                result.next_due_ms or 0,
                self._record_ttl,
                self._log_size,
                json.dumps(result.dead_letter or {}, separators=(",", ":")),
                self._dead_ttl,
                disable_after_ms,
                result.reason,
            ],
        )
        return bool(owned)

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
