r"""The durable delivery records in Redis: the source of truth; Celery messages only trigger them.

An event waits in the ``pending`` list until a dispatch task drains it into one delivery (one
event to one subscriber) per matching subscriber: a HASH
``{prefix}:delivery:{event_id}:{subscriber_id}`` with ``event``, ``sub``, ``type``, ``state``,
``attempts`` (made), ``trigger``, ``created``, ``chain``, ``lease``, ``next`` and, once finished,
``done`` and ``reason``::

    blocked --(head of its user's chain)--> ready --claim--> running --finish--> delivered | dead
                                              ^                 |  \--finish--> waiting
                                              +-- sweep: lease -+                  |
                                              |   expired (worker died)            |
                                              +-------- sweep: due ----------------+
    blocked | ready | waiting --(a newer update, coalescing)--> superseded
    blocked | ready | running | waiting --(the user's data erased)--> erased

Ready deliveries wait in their subscriber's ``ready`` list; running and waiting ones are in the
``due`` ZSET, scored by lease end or next due time. Every transition is one Lua script
(``records/lua/``, loaded by ``records.scripts``) on the Redis server's clock, so two workers or
two schedulers never both own a delivery and a worker's clock cannot move a deadline.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis

from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker import operational_events as operational
from reseller_webhooks.worker.records import scripts
from reseller_webhooks.worker.records.breaker import (
    BREAKER_FIELDS,
    probe_intervals_ms,
)
from reseller_webhooks.worker.records.shapes import (
    Claim,
    ClaimBatch,
    Drained,
    Finish,
    Route,
    Swept,
    Trigger,
    iso_ms,
    triggers_of,
)

#: How long a slot stays live without its holder's heartbeat (renewed every second).
SLOT_TTL_S = 5.0

#: The reason of a disable an operator gives none for.
DISABLED_BY_OPERATOR = "disabled by an operator"


class Store:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        record_retention_s: int,
        dead_letter_retention_s: int,
        attempt_log_size: int,
        trigger_expiry_s: float = 60.0,
        failing_after: int = operational.DEFAULT_FAILING_AFTER,
        schedule_scale: float = 1.0,
    ) -> None:
        self.redis = client
        self.keys = keys
        self._record_ttl = record_retention_s
        self._dead_ttl = dead_letter_retention_s
        self._log_size = attempt_log_size
        self._trigger_ms = int(trigger_expiry_s * 1000)
        self._failing_after = failing_after
        self._probe_ms = probe_intervals_ms(schedule_scale)
        self._drain = scripts.register(client, "drain")
        self._claim = scripts.register(client, "claim")
        self._extend = scripts.register(client, "extend")
        self._finish = scripts.register(client, "finish")
        self._sweep = scripts.register(client, "sweep")
        self._heartbeat = scripts.register(client, "heartbeat")
        self.replay_script = scripts.register(client, "replay")
        self._expedite = scripts.register(client, "expedite")

    @property
    def record_retention_s(self) -> int:
        return self._record_ttl

    def drain(
        self,
        routes: Mapping[str, Sequence[Route]],
        *,
        batch: int,
        now_iso: str,
        keep_armed: bool = False,
    ) -> Drained:
        """Fan out up to ``batch`` pending events in one script call (see ``lua/drain.lua``).

        With ``keep_armed`` the dispatch trigger stays armed when the list is empty (the caller
        drains again shortly), else it is disarmed in the same step."""
        k = self.keys
        args: list[Any] = [k.prefix, batch, self._trigger_ms, self._record_ttl, self._log_size]
        args += [now_iso, int(keep_armed), scripts.USER_EVENTS_KEPT, len(routes)]
        for event_type, subs in routes.items():
            args += [event_type, len(subs)]
            for r in subs:
                args += [r.subscriber_id, int(r.ordered), int(r.coalesce)]
        events, missing, triggers, more, unmatched = cast(
            list[Any],
            self._drain(keys=[k.pending, k.dispatch_armed, k.due, k.active_subscribers], args=args),
        )
        return Drained(int(events), int(missing), triggers_of(triggers), bool(more), int(unmatched))

    def claim(
        self,
        subscriber_id: str,
        token: str,
        *,
        most: int,
        lease_ms: int,
        bound: int,
        keep: bool = False,
        finished: Sequence[tuple[Claim, Finish]] = (),
        rate: float | None = None,
        burst: int | None = None,
    ) -> ClaimBatch | None:
        """Claim up to ``most`` ready deliveries for the holder of slot ``token``; None when the
        slot is gone or nothing is left (the slot is then released). With ``keep``, nothing
        left keeps the slot and returns an empty batch (the caller waits for more, see
        ``delivery.wake``). ``finished`` attempts are recorded first (as :meth:`finish` does), in
        the same round trip. ``rate`` and ``burst`` are the subscriber's rate limit (see
        ``lua/claim.lua``): a short hold returns an empty batch with ``hold_ms``."""
        started = time.monotonic()
        args: list[Any] = [self.keys.prefix, subscriber_id, token, lease_ms, most, bound]
        args += [self._trigger_ms, int(SLOT_TTL_S * 1000), int(keep)]
        args += ["" if rate is None else rate, "" if burst is None else burst]
        if finished:
            reply = self._finish_then_claim(finished, args)
        else:
            reply = self._claim(keys=[self.keys.due], args=args)
        lease, raw, more, disabled, hold_ms = cast(list[Any], reply)
        if not lease:  # released (held longer than a short hold: SWEEP arms a slot then)
            return None
        if int(lease) < 0:  # kept: nothing to claim right now, or a short hold
            return ClaimBatch([], [], disabled.decode(), int(hold_ms))
        expires_at = started + lease_ms / 1000
        claims = [
            Claim(
                delivery_id=did.decode(),
                event_id=event_id.decode(),
                subscriber_id=subscriber_id,
                attempt=int(attempt),
                trigger=trigger.decode(),
                body=bytes(body or b""),
                lease=int(lease),
                expires_at=expires_at,
                published_at=int(published_at or 0),
                sequence=int(sequence or 0),
                traceparent=traceparent.decode(),
            )
            for did, event_id, attempt, trigger, body, published_at, sequence, traceparent in raw
        ]
        return ClaimBatch(claims, triggers_of(more), disabled.decode())

    def release(self, subscriber_id: str, token: str) -> None:
        """Give a slot back (its task will not serve the subscriber)."""
        self.redis.zrem(self.keys.slots(subscriber_id), token)

    def heartbeat(self, held: Sequence[tuple[str, str]]) -> None:
        """Renew the (subscriber, slot token) pairs this worker's tasks hold."""
        if held:
            args: list[Any] = [self.keys.prefix, int(SLOT_TTL_S * 1000)]
            for pair in held:
                args += pair
            self._heartbeat(args=args)

    def extend(self, claims: Sequence[Claim], *, lease_ms: int) -> list[Claim]:
        """Extend the leases still held (all share one lease); returns the claims kept."""
        if not claims:
            return []
        started = time.monotonic()
        lease, kept = cast(
            list[Any],
            self._extend(
                keys=[self.keys.due],
                args=[
                    self.keys.prefix,
                    claims[0].lease,
                    lease_ms,
                    *(c.delivery_id for c in claims),
                ],
            ),
        )
        held = {k.decode() for k in kept}
        return [
            dataclasses.replace(c, lease=int(lease), expires_at=started + lease_ms / 1000)
            for c in claims
            if c.delivery_id in held
        ]

    def _finish_then_claim(
        self, finished: Sequence[tuple[Claim, Finish]], claim_args: list[Any]
    ) -> Any:
        """FINISH then CLAIM, pipelined: one round trip. A server that lost its scripts (a
        restart) gets them loaded, and whichever of the two it refused runs again."""
        finish_args = self._finish_args(finished)
        pipe = self.redis.pipeline(transaction=False)
        pipe.evalsha(self._finish.sha, 2, self.keys.due, self.keys.dead, *finish_args)
        pipe.evalsha(self._claim.sha, 1, self.keys.due, *claim_args)
        done, claimed = pipe.execute(raise_on_error=False)
        if isinstance(done, redis.exceptions.NoScriptError):
            done = self._finish(keys=[self.keys.due, self.keys.dead], args=finish_args)
        if isinstance(claimed, redis.exceptions.NoScriptError):
            claimed = self._claim(keys=[self.keys.due], args=claim_args)
        for reply in (done, claimed):
            if isinstance(reply, Exception):
                raise reply
        self._finished(done)
        return claimed

    def finish(self, results: Sequence[tuple[Claim, Finish]]) -> list[bool]:
        """Record each attempt and move each delivery on where this worker still owns it; the
        operational events this starts are recorded with it and logged here."""
        if not results:
            return []
        reply = self._finish(keys=[self.keys.due, self.keys.dead], args=self._finish_args(results))
        return self._finished(reply)

    def _finished(self, reply: Any) -> list[bool]:
        owned, notices = cast(list[Any], reply)
        operational.log_emitted(notices)
        return [bool(o) for o in owned]

    def _finish_args(self, results: Sequence[tuple[Claim, Finish]]) -> list[Any]:
        now_iso = iso_ms(int(time.time() * 1000))
        args: list[Any] = [self.keys.prefix, self._record_ttl, self._log_size, self._dead_ttl]
        args += [self._failing_after, now_iso, scripts.RECENT_KEPT, scripts.RATE_TTL_S]
        args += self._probe_ms
        for claim, result in results:
            args += [
                claim.delivery_id,
                claim.subscriber_id,
                claim.lease,
                result.outcome,
                json.dumps(result.attempt, separators=(",", ":")),
                result.delay_ms or 0,
                json.dumps(result.dead_letter or {}, separators=(",", ":")),
                result.disable_after_ms,
                result.reason,
                "" if result.rate_limit is None else result.rate_limit,
                result.pause_ms,
                round(result.measured_rate, 3),
                result.breaker_after,
            ]
        return args

    def sweep(self, *, batch: int, dispatch_lost_after_s: float) -> Swept:
        """Atomically take what is due or lapsed (see ``lua/sweep.lua``)."""
        k, lost_ms = self.keys, int(dispatch_lost_after_s * 1000)
        triggers, dispatch, moved, late = cast(
            list[Any],
            self._sweep(
                keys=[k.due, k.pending, k.dispatch_armed, k.active_subscribers, k.dead],
                args=[k.prefix, self._trigger_ms, batch, lost_ms, self._dead_ttl * 1000],
            ),
        )
        return Swept(triggers_of(triggers), bool(dispatch), int(moved), [int(x) for x in late])

    def replay(self, delivery_id: str, *, event_ttl_s: int) -> list[Trigger] | None:
        """Put a dead delivery back as ready; None when there is no such dead letter."""
        replayed, triggers = self.replay_many([delivery_id], event_ttl_s=event_ttl_s)
        return triggers if replayed else None

    def replay_many(
        self, delivery_ids: Sequence[str], *, event_ttl_s: int
    ) -> tuple[list[str], list[Trigger]]:
        """Put dead deliveries back as ready in one script call (keep it to a few hundred);
        the ids that were dead letters, and the triggers to send."""
        out = cast(
            list[Any],
            self.replay_script(
                keys=[self.keys.dead, self.keys.active_subscribers],
                args=[self.keys.prefix, event_ttl_s, self._trigger_ms, *delivery_ids],
            ),
        )
        return [did.decode() for did in out[0]], triggers_of(out[1])

    def expedite(self, subscriber_id: str) -> int:
        """Make the subscriber's waiting retries due now (see ``lua/expedite.lua``); returns how
        many. Scans the due set without blocking Redis."""
        ids = [
            member.decode()
            for member, _ in self.redis.zscan_iter(self.keys.due, match=f"*:{subscriber_id}")
        ]
        moved = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            moved += int(
                cast(
                    int,
                    self._expedite(
                        keys=[self.keys.due], args=[self.keys.prefix, subscriber_id, *chunk]
                    ),
                )
            )
        return moved

    def bad_message(self, task: str, reason: str, shape: Mapping[str, Any]) -> None:
        """Dead-letter a message that is not a valid trigger; the worker goes on. ``shape``
        describes the message (size, content type, kinds of arguments), never its content."""
        record = {
            "at_ms": int(time.time() * 1000),
            "task": task,
            "reason": reason,
            "shape": dict(shape),
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(self.keys.bad_messages, json.dumps(record))
        pipe.ltrim(self.keys.bad_messages, 0, 999)
        pipe.execute()

    def disable_subscriber(self, subscriber_id: str, reason: str = DISABLED_BY_OPERATOR) -> None:
        """An operator's disable: no breaker is left to probe it (an operator enables it)."""
        key = self.keys.subscriber_state(subscriber_id)
        self.redis.hset(
            key,
            mapping={"disabled": "1", "reason": reason, "disabled_at": int(time.time() * 1000)},
        )
        self.redis.hdel(key, *BREAKER_FIELDS)

    def enable_subscriber(self, subscriber_id: str) -> None:
        """Clear a disable (operator, 410 or persistent failure) and the failure streak."""
        self.redis.hset(self.keys.subscriber_state(subscriber_id), "disabled", "0")
        self.redis.hdel(
            self.keys.subscriber_state(subscriber_id),
            "reason",
            "disabled_at",
            "failing_since",
            "failing_since_iso",
            "failures",
            *BREAKER_FIELDS,
        )

    def subscriber_state(self, subscriber_id: str) -> dict[str, str]:
        raw = cast(
            dict[bytes, bytes], self.redis.hgetall(self.keys.subscriber_state(subscriber_id))
        )
        return {k.decode(): v.decode() for k, v in raw.items()}

    def bad_messages(self) -> list[dict[str, Any]]:
        raw = cast(list[bytes], self.redis.lrange(self.keys.bad_messages, 0, -1))
        return [json.loads(r) for r in raw]
