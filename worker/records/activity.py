"""What the operator console reads beyond the metrics: the story of deliveries.

The Lua transitions keep three small indexes for it (``records.scripts``): attempts per subscriber
and minute (the success rate over the last hour), the deliveries of a subscriber's latest
attempts, and a user's latest events. Everything else is the delivery records themselves:
``delivery:{event}:{subscriber}``, its attempt log and its dead letter. Nothing here writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.records.deadletters import DeadLetter
from reseller_webhooks.worker.records.scripts import RECENT_KEPT, USER_EVENTS_KEPT
from reseller_webhooks.worker.records.shapes import split_delivery_id
from reseller_webhooks.worker.records.store import Store

#: The success-rate window, in minutes of server time.
RATE_WINDOW_MIN = 60


@dataclass(frozen=True, slots=True)
class Rate:
    """Attempts recorded over the last hour: delivered and failed (retried or dead)."""

    ok: int
    failed: int

    @property
    def total(self) -> int:
        return self.ok + self.failed

    @property
    def percent(self) -> float | None:
        """Share delivered, 0-100; None without attempts."""
        return 100.0 * self.ok / self.total if self.total else None


def window_minutes(now_ms: int, minutes: int = RATE_WINDOW_MIN) -> list[int]:
    """The minute buckets that make up the last ``minutes`` minutes at ``now_ms``: the current,
    partial one and the ``minutes`` before it (whole minutes: at most one minute too many)."""
    current = now_ms // 60_000
    return list(range(current - minutes, current + 1))


def server_ms(store: Store) -> int:
    seconds, micros = store.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def rates(store: Store, subscriber_ids: Sequence[str]) -> dict[str, Rate]:
    """Each subscriber's attempts over the last hour, in one round trip."""
    minutes = window_minutes(server_ms(store))
    pipe = store.redis.pipeline(transaction=False)
    for sub in subscriber_ids:
        for minute in minutes:
            pipe.hmget(store.keys.rate_minute(sub, minute), "ok", "failed")
    raw = iter(cast(list[list[bytes | None]], pipe.execute()))
    out: dict[str, Rate] = {}
    for sub in subscriber_ids:
        ok = failed = 0
        for _ in minutes:
            got_ok, got_failed = next(raw)
            ok += int(got_ok or 0)
            failed += int(got_failed or 0)
        out[sub] = Rate(ok, failed)
    return out


@dataclass
class DeliveryStory:
    """One event to one subscriber: its record (while kept), its dead letter and its attempts."""

    delivery_id: str
    record: dict[str, str]
    attempts: list[dict[str, Any]]
    letter: DeadLetter | None = None

    @property
    def event_id(self) -> str:
        return split_delivery_id(self.delivery_id)[0]

    @property
    def subscriber_id(self) -> str:
        return split_delivery_id(self.delivery_id)[1]

    @property
    def state(self) -> str:
        if self.record.get("state"):
            return self.record["state"]
        return "dead" if self.letter else "expired"

    @property
    def event_type(self) -> str:
        return self.record.get("type") or (self.letter.event_type if self.letter else "")


@dataclass
class EventStory:
    """An event (its record, while kept: type, user, publish time; never its body here) and
    every delivery of it that is still on record."""

    event_id: str
    event_type: str
    user_id: str
    published_at_ms: int | None
    body_kept: bool
    deliveries: list[DeliveryStory] = field(default_factory=list)


class Activity:
    """Reads the stories: by delivery, by event, by user, and a subscriber's latest attempts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys: Keys = store.keys

    def subscriber_ids(self, configured: Iterable[str]) -> list[str]:
        """The configured subscribers, then any other that has had deliveries."""
        ids = list(configured)
        active = cast(set[bytes], self.store.redis.smembers(self.keys.active_subscribers))
        return ids + sorted(s.decode() for s in active if s.decode() not in ids)

    def deliveries(self, delivery_ids: Sequence[str]) -> list[DeliveryStory]:
        """The deliveries among ``delivery_ids`` that anything is still known of."""
        pipe = self.store.redis.pipeline(transaction=False)
        for did in delivery_ids:
            pipe.hgetall(self.keys.delivery(did))
            pipe.get(self.keys.dead_letter(did))
            pipe.lrange(self.keys.attempts(did), 0, -1)
        raw = pipe.execute()
        stories = []
        for i, did in enumerate(delivery_ids):
            record = cast(dict[bytes, bytes], raw[3 * i])
            letter = cast(bytes | None, raw[3 * i + 1])
            attempts = cast(list[bytes], raw[3 * i + 2])
            if not (record or letter or attempts):
                continue
            stories.append(
                DeliveryStory(
                    delivery_id=did,
                    record={k.decode(): v.decode() for k, v in record.items()},
                    attempts=[json.loads(a) for a in attempts],
                    letter=DeadLetter(did, json.loads(letter)) if letter else None,
                )
            )
        return stories

    def events(self, event_ids: Sequence[str], subscriber_ids: Sequence[str]) -> list[EventStory]:
        """Each event still known (its record or any delivery), with its deliveries to the
        given subscribers."""
        pipe = self.store.redis.pipeline(transaction=False)
        for eid in event_ids:
            pipe.hmget(self.keys.event(eid), "type", "user", "published_at", "about")
            pipe.hexists(self.keys.event(eid), "body")
        raw = pipe.execute()
        found = self.deliveries([f"{eid}:{sub}" for eid in event_ids for sub in subscriber_ids])
        by_event: dict[str, list[DeliveryStory]] = {}
        for story in found:
            by_event.setdefault(story.event_id, []).append(story)
        stories = []
        for i, eid in enumerate(event_ids):
            kind, user, published, _about = cast(list[bytes | None], raw[2 * i])
            deliveries = by_event.get(eid, [])
            if kind is None and not deliveries:
                continue
            stories.append(
                EventStory(
                    event_id=eid,
                    event_type=kind.decode() if kind else deliveries[0].event_type,
                    user_id=user.decode() if user else "",
                    published_at_ms=int(published) if published else None,
                    body_kept=bool(raw[2 * i + 1]),
                    deliveries=deliveries,
                )
            )
        return stories

    def user_event_ids(self, user_id: str) -> list[str]:
        raw = cast(
            list[bytes],
            self.store.redis.lrange(self.keys.user_events(user_id), 0, USER_EVENTS_KEPT - 1),
        )
        return list(dict.fromkeys(r.decode() for r in raw))

    def event_body(self, event_id: str) -> str | None:
        raw = cast(bytes | None, self.store.redis.hget(self.keys.event(event_id), "body"))
        return raw.decode(errors="replace") if raw is not None else None

    def recent_attempts(self, subscriber_id: str, *, most: int = RECENT_KEPT) -> list[Attempt]:
        """The subscriber's latest attempts, newest first, from the attempt logs of the
        deliveries its latest attempts were for."""
        raw = cast(
            list[bytes],
            self.store.redis.lrange(self.keys.recent_attempts(subscriber_id), 0, most - 1),
        )
        dids = list(dict.fromkeys(r.decode() for r in raw))
        stories = self.deliveries(dids)
        attempts = [Attempt(s.delivery_id, a) for s in stories for a in s.attempts]
        attempts.sort(key=lambda a: str(a.data.get("at", "")), reverse=True)
        return attempts[:most]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One entry of a delivery's attempt log."""

    delivery_id: str
    data: dict[str, Any]
