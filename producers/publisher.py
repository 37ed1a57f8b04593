"""Publishing: validate, record durably in Redis, then trigger a dispatch only if none is pending.

The record (event body + its id at the end of the ``pending`` list) is the commit point: once it is
written the event will be delivered, so its id is returned even if sending the trigger fails (the
scheduler sends it). Under load the trigger is shared: one script call records the event and arms
the dispatch trigger only when none is armed, and a worker that takes the trigger drains the list
in batches. At low rates every event still gets its own immediate trigger; at high rates a publish
is one Redis round trip and the number of Celery messages no longer grows with the events.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import redis
from celery import Celery

from reseller_webhooks.producers.connection import (
    Replication,
    broker_options,
    operator_fault,
    publish_replicas,
    redis_client,
)
from reseller_webhooks.producers.errors import (
    ConfigError,
    IdempotencyKeyReusedError,
    InvalidEventError,
    StoreResetError,
    UnavailableError,
)
from reseller_webhooks.producers.events import (
    DEFAULT_MAX_BODY_BYTES,
    EventType,
    WebhookEvent,
    build_event,
    new_event_id,
)
from reseller_webhooks.producers.refusals import refusal
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.store_identity import StoreWatch
from reseller_webhooks.producers.trace_context import current_traceparent
from reseller_webhooks.producers.user import ResellerUser
from reseller_webhooks.producers.wire import DISPATCH_TASK, Keys

log = logging.getLogger(__name__)

EventItem = tuple[str | EventType, ResellerUser | Mapping[str, Any]] | Mapping[str, Any]

#: What an idempotency key may be: printable ASCII without spaces, 1 to 200 characters.
#: How often a publish looks at the store's identity and count (one round trip, at most once per
#: interval): a Redis that came back empty or behind is refused with ``StoreResetError``.
STORE_CHECK_INTERVAL_S = 1.0
IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,200}$")

# KEYS: pending, dispatch-armed, dispatch-waiting. ARGV: prefix, retention (s), idempotency
# retention (s), then per event: id, type, body, user id, idempotency key ('' for none), the
# event's fingerprint ('' without a key), the caller's traceparent ('' for none). One command
# for a whole batch. An idempotency key seen within its retention with the same fingerprint
# returns the event id first published under it and records nothing; with another fingerprint
# the whole call records nothing and answers -1.
# When the trigger is armed already and its task waits for events (it lingers), wakes it.
# Returns {1 if the caller must send the dispatch trigger, ids}.
#: The commit point of a publish (``lua/record_events.lua``, whose header names its KEYS and ARGV).
RECORD_EVENTS = (
    resources.files(__name__.rpartition(".")[0])
    .joinpath("lua/record_events.lua")
    .read_text(encoding="utf-8")
)


#: What makes a publish an outage for the caller (``UnavailableError``, 503): a Redis out of
#: reach, and one that is up but refuses the commit script for now (``refusals.refusal``: full,
#: a replica, unable to persist, busy). Redis refuses a script before it runs, so nothing is
#: recorded.
UNAVAILABLE: tuple[type[redis.RedisError], ...] = (redis.ConnectionError, redis.TimeoutError)


def _unavailable(exc: redis.RedisError) -> str | None:
    """The kind of outage ``exc`` is, or None when it is not one."""
    return type(exc).__name__ if isinstance(exc, UNAVAILABLE) else refusal(exc)


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


def _coerce_item(item: EventItem, where: str = "") -> tuple[Any, Any]:
    """``(event, data)`` of one item; problems are prefixed with ``where`` (``[3]`` in a batch)."""
    prefix = f"{where}." if where else ""
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"event", "data"})
        missing = [k for k in ("event", "data") if k not in item]
        problems = [f"{prefix}{k}: unknown field; an item is {{event, data}}" for k in unknown]
        problems += [f"{prefix}{k}: field required" for k in missing]
        if problems:
            raise InvalidEventError(problems)
        return item["event"], item["data"]
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise InvalidEventError([f"{where or 'body'}: must be an object {{event, data}}"])
    event, data = item
    return event, data


def validate_item(item: Any, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> WebhookEvent:
    """One ``{event, data}`` object (as an HTTP body carries it), validated as ``publish`` does."""
    if not isinstance(item, Mapping):
        raise InvalidEventError(["body: must be an object {event, data}"])
    event, data = _coerce_item(item)
    return build_event(event, data, max_body_bytes=max_body_bytes)


def validate_batch(
    items: Iterable[EventItem], *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> list[WebhookEvent]:
    """Validate every item; one error lists every problem, each prefixed with the item index."""
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
        raise InvalidEventError(["batch: must be a list of {event, data} objects"])
    events: list[WebhookEvent] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            event, data = _coerce_item(item, f"[{index}]")
            events.append(build_event(event, data, max_body_bytes=max_body_bytes))
        except InvalidEventError as exc:
            problems += [p if p.startswith("[") else f"[{index}].{p}" for p in exc.problems]
    if problems:
        raise InvalidEventError(problems)
    return events


def _check_idempotency_keys(keys: Sequence[str] | None, count: int) -> list[str]:
    if keys is None:
        return [""] * count
    if isinstance(keys, str) or len(keys) != count:
        raise InvalidEventError(
            [f"idempotency_keys: one key per event is required ({count} event(s))"]
        )
    problems = [
        f"idempotency_key{'' if count == 1 else f'[{i}]'}: must be 1 to 200 printable ASCII"
        " characters without spaces"
        for i, key in enumerate(keys)
        if not isinstance(key, str) or not IDEMPOTENCY_KEY.match(key)
    ]
    if problems:
        raise InvalidEventError(problems)
    return list(keys)


@dataclass(frozen=True, slots=True)
class Commit:
    """One call of the commit script: how many events, its KEYS and ARGV."""

    count: int
    keys: list[str]
    args: list[Any]


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
        self._store_watch = StoreWatch(self._redis, self.keys)

    def user_created(
        self, user: ResellerUser | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> str:
        return self.publish(EventType.USER_CREATED, user, idempotency_key=idempotency_key)

    def user_updated(
        self, user: ResellerUser | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> str:
        return self.publish(EventType.USER_UPDATED, user, idempotency_key=idempotency_key)

    def publish(
        self,
        event: str | EventType,
        data: ResellerUser | Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> str:
        """Validate and enqueue one event; returns its id (the ``webhook-id`` subscribers see).

        With ``idempotency_key``, publishing again under the same key within
        ``WEBHOOKS_IDEMPOTENCY_RETENTION_S`` returns the first event's id and enqueues nothing:
        a producer that retries after an error or a timeout never creates a second event. The
        key is bound to the event type and data: sent again with others it raises
        :class:`IdempotencyKeyReusedError` and records nothing.
        """
        keys = [idempotency_key] if idempotency_key is not None else None
        limit = self.settings.max_body_bytes
        event_model = build_event(event, data, max_body_bytes=limit)
        return self.publish_events([event_model], idempotency_keys=keys)[0]

    def publish_batch(
        self, items: Iterable[EventItem], *, idempotency_keys: Sequence[str] | None = None
    ) -> list[str]:
        """Validate all items first; enqueue all or nothing. Returns the ids in input order."""
        return self.publish_events(
            validate_batch(items, max_body_bytes=self.settings.max_body_bytes),
            idempotency_keys=idempotency_keys,
        )

    def publish_events(
        self, events: Sequence[WebhookEvent], *, idempotency_keys: Sequence[str] | None = None
    ) -> list[str]:
        """Record already-validated events durably, then trigger a dispatch if none is pending."""
        if not events:
            return []
        commit = self.commit_for(events, idempotency_keys)
        try:
            self.check_store()
            result = self._replication.run(self._record, keys=commit.keys, args=commit.args)
        except redis.RedisError as exc:
            raise self.outage(exc) from None
        ids, arm = self.settle(commit, result)
        if arm:
            self.trigger(ids)
        return ids

    # The steps of ``publish_events``, in order; the ingest API makes the same steps with the
    # script call on its event loop (reseller_webhooks.worker.api.commit).

    def commit_for(
        self, events: Sequence[WebhookEvent], idempotency_keys: Sequence[str] | None
    ) -> Commit:
        """The script's keys and arguments for these events (their ids drawn here)."""
        idem = _check_idempotency_keys(idempotency_keys, len(events))
        args: list[Any] = [
            self.keys.prefix,
            self.settings.event_retention_s,
            self.settings.idempotency_retention_s,
        ]
        traceparent = current_traceparent()
        for event, key in zip(events, idem, strict=True):
            fingerprint = event.fingerprint() if key else ""
            args += [new_event_id(), event.event.value, event.body(), event.data.id]
            args += [key, fingerprint, traceparent]
        keys = [self.keys.pending, self.keys.dispatch_armed, self.keys.dispatch_waiting]
        return Commit(len(events), keys, args)

    def check_store(self) -> None:
        """``StoreResetError`` if Redis came back empty or behind (a round trip at most once
        per ``STORE_CHECK_INTERVAL_S``: see :meth:`store_check_due`)."""
        change = self._store_watch.check_every(STORE_CHECK_INTERVAL_S)
        if change is not None:
            raise StoreResetError(change.describe())

    def store_check_due(self) -> bool:
        """Whether :meth:`check_store` would make a round trip now."""
        return self._store_watch.due(STORE_CHECK_INTERVAL_S)

    @staticmethod
    def outage(exc: redis.RedisError) -> Exception:
        """What a Redis error of the commit becomes for the caller: ``UnavailableError`` for an
        outage (nothing recorded), the operator's ``ConfigError``, else ``exc`` itself."""
        kind = _unavailable(exc)
        if kind is None:
            return exc
        fault = operator_fault(exc) if isinstance(exc, redis.ConnectionError) else None
        if fault is not None:
            return fault
        return UnavailableError(
            f"{kind}; the event(s) may not be recorded: publish again with the"
            " same idempotency key to be sure"
        )

    @staticmethod
    def settle(commit: Commit, result: Any) -> tuple[list[str], bool]:
        """The ids the script answered and whether the caller must send the dispatch trigger;
        ``IdempotencyKeyReusedError`` when a key was held by another event (nothing recorded)."""
        arm, raw_ids = cast(list[Any], result)
        if arm == -1:  # nothing recorded
            where = "idempotency_key" if commit.count == 1 else f"idempotency_keys[{raw_ids}]"
            raise IdempotencyKeyReusedError(where)
        return [i.decode() for i in raw_ids], bool(arm)

    def trigger(self, ids: Sequence[str]) -> None:
        """Send the dispatch trigger. The events are recorded whatever happens here: a failure
        is logged, the arm is undone where possible, and the scheduler sends one instead."""
        try:
            self._celery.send_task(DISPATCH_TASK, queue=self.keys.queue)
        except Exception as exc:  # the durable record already guarantees delivery
            log.warning(
                "event %s recorded but its dispatch trigger was not sent (%s); the scheduler"
                " will send one",
                ids[0],
                type(exc).__name__,
            )
            # Undone, the next publish or sweep re-arms at once; else it lapses after the
            # visibility timeout.
            with contextlib.suppress(redis.RedisError):
                self._redis.delete(self.keys.dispatch_armed)

    def ping(self) -> None:
        """Connect to Redis and the broker now, or raise; and build what Celery builds on the
        first message it sends (about 20 ms of CPU), so that the first publish costs what the
        others do. Call it when the service starts."""
        self.ping_redis()
        self._celery.connection_for_write().ensure_connection(max_retries=1)
        amqp = self._celery.amqp
        amqp.send_task_message  # noqa: B018 (the sender, with its task-sent event dispatcher)
        amqp.create_task_message  # noqa: B018
        self._celery.backend  # noqa: B018
        with self._celery.producer_or_acquire() as producer:
            producer.maybe_declare(amqp.queues[self.keys.queue])

    def ping_redis(self) -> None:
        """Raise unless Redis answers now (a health check): ``UnavailableError`` for an outage,
        ``ConfigError`` for what only an operator can fix (a TLS certificate that does not
        verify, a refused user name or password), saying what to set."""
        try:
            self._redis.ping()
        except redis.AuthenticationError:
            raise ConfigError("REDIS_URL: Redis refused the user name or password") from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            fault = operator_fault(exc) if isinstance(exc, redis.ConnectionError) else None
            if fault is not None:
                raise fault from None
            raise UnavailableError(type(exc).__name__) from None

    def close(self) -> None:
        self._redis.close()
        self._celery.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
