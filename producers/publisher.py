"""Publishing: validate, record durably in Redis, then enqueue a trigger by task name.

The Redis record (event body + an entry in the dispatch set) is written before the Celery message
is sent, so a message lost in transit costs a delay (the scheduler re-triggers it), never an event.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from celery import Celery

from producers.connection import Replication, broker_options, publish_replicas, redis_client
from producers.errors import InvalidEventError
from producers.events import EventType, WebhookEvent, build_event, new_event_id
from producers.settings import ProducerSettings
from producers.user import ResellerUser
from producers.wire import DISPATCH_TASK, Keys

EventItem = tuple[str | EventType, ResellerUser | Mapping[str, Any]] | Mapping[str, Any]

#: Event ids per dispatch message; bounds a message's size and a task's run time.
DISPATCH_CHUNK = 200

# KEYS: dispatch. ARGV: prefix, published at (ms), lost after (ms), retention (s), then per event
# id, type, body. One command for a whole batch, atomic like the MULTI pipeline it replaced and
# cheaper to send and answer: 0.056-0.063 against 0.080-0.089 ms per event (batches of 500).
RECORD_EVENTS = """
local prefix, now, lost_after, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for i = 5, #ARGV, 3 do
  local key = prefix .. ':event:' .. ARGV[i]
  redis.call('HSET', key, 'type', ARGV[i + 1], 'body', ARGV[i + 2], 'published_at', now)
  redis.call('EXPIRE', key, ttl)
  redis.call('ZADD', KEYS[1], lost_after, ARGV[i])
end
return (#ARGV - 4) / 3
"""


def celery_client(settings: ProducerSettings) -> Celery:
    """A Celery app used only to send messages by name (no task code is imported)."""
    app = Celery("reseller-webhooks-producer", set_as_current=False)
    app.conf.update(
        broker_options(settings),
        task_serializer="json",
        accept_content=["json"],
        task_send_sent_event=True,
    )
    return app


def _coerce_item(index: int, item: EventItem) -> tuple[Any, Any]:
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"event", "data"})
        missing = [k for k in ("event", "data") if k not in item]
        problems = [f"[{index}].{k}: unknown field; an item is {{event, data}}" for k in unknown]
        problems += [f"[{index}].{k}: field required" for k in missing]
        if problems:
            raise InvalidEventError(problems)
        return item["event"], item["data"]
    event, data = item
    return event, data


def validate_batch(items: Iterable[EventItem]) -> list[WebhookEvent]:
    """Validate every item; one error lists every problem, each prefixed with the item index."""
    events: list[WebhookEvent] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            event, data = _coerce_item(index, item)
            events.append(build_event(event, data))
        except InvalidEventError as exc:
            problems += [p if p.startswith("[") else f"[{index}].{p}" for p in exc.problems]
    if problems:
        raise InvalidEventError(problems)
    return events


class Publisher:
    """Emit ``reseller.user.*`` events. Thread-safe; create one per process and reuse it."""

    def __init__(
        self,
        settings: ProducerSettings | None = None,
        *,
        celery_app: Celery | None = None,
    ) -> None:
        self.settings = settings or ProducerSettings()
        self.keys = Keys(self.settings.key_prefix)
        self._redis = redis_client(self.settings)
        self._record = self._redis.register_script(RECORD_EVENTS)
        self._replication = Replication(
            self._redis,
            publish_replicas(self.settings),
            self.settings.publish_replicas_timeout_ms,
        )
        self._celery = celery_app or celery_client(self.settings)

    def user_created(self, user: ResellerUser | Mapping[str, Any]) -> str:
        return self.publish(EventType.USER_CREATED, user)

    def user_updated(self, user: ResellerUser | Mapping[str, Any]) -> str:
        return self.publish(EventType.USER_UPDATED, user)

    def publish(self, event: str | EventType, data: ResellerUser | Mapping[str, Any]) -> str:
        """Validate and enqueue one event; returns its id (the ``webhook-id`` subscribers see)."""
        return self.publish_events([build_event(event, data)])[0]

    def publish_batch(self, items: Iterable[EventItem]) -> list[str]:
        """Validate all items first; enqueue all or nothing. Returns the ids in input order."""
        return self.publish_events(validate_batch(items))

    def publish_events(self, events: Sequence[WebhookEvent]) -> list[str]:
        """Record already-validated events durably, then send their dispatch triggers."""
        if not events:
            return []
        ids = [new_event_id() for _ in events]
        now_ms = int(time.time() * 1000)
        lost_after_ms = now_ms + int(self.settings.visibility_timeout_s * 1000)
        ttl_s = self.settings.event_retention_s
        args: list[Any] = [self.keys.prefix, now_ms, lost_after_ms, ttl_s]
        for event_id, event in zip(ids, events, strict=True):
            args += [event_id, event.event.value, event.body()]
        self._replication.run(self._record, keys=[self.keys.dispatch], args=args)
        for start in range(0, len(ids), DISPATCH_CHUNK):
            self._celery.send_task(
                DISPATCH_TASK, args=[ids[start : start + DISPATCH_CHUNK]], queue=self.keys.queue
            )
        return ids

    def close(self) -> None:
        self._redis.close()
        self._celery.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
