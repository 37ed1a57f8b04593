"""``webhooks.publish``: publishing through Celery's protocol, for producers in other languages.

A client that speaks Celery (celery-node, gocelery, rusty-celery) sends this one task to the
deliveries queue with kwargs ``event``, ``data`` and optionally ``idempotency_key`` (or the same
three as args). The worker validates and records it exactly as ``Publisher.publish`` does (the
publisher's own ``validate_item`` and ``publish_events``). A message that breaks the contract is
refused once: one log line and one ``dlq messages`` record naming the field and the rule (never
a value), and the task succeeds with ``{"refused": [...]}``; it is never retried.

The arguments are personal data, and Flower prints what a task-received event carries: the
``task_received`` hook below replaces the arguments' representation before that event is sent,
whatever the client wrote in ``argsrepr``/``kwargsrepr``; a retry is sent with the same redacted
representation.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from celery import signals

from reseller_webhooks.producers.errors import InvalidEventError, UnavailableError
from reseller_webhooks.producers.events import WebhookEvent
from reseller_webhooks.producers.publisher import IDEMPOTENCY_KEY, Publisher, validate_item
from reseller_webhooks.producers.wire import PUBLISH_TASK
from reseller_webhooks.worker.queue.app import app
from reseller_webhooks.worker.queue.context import runtime_of

log = logging.getLogger(__name__)

FIELDS = ("event", "data", "idempotency_key")
#: What Flower and the logs show for a publish task's arguments.
REDACTED_ARGS = "()"
REDACTED_KWARGS = "{'event': ..., 'data': '(redacted)', 'idempotency_key': ...}"
#: A publish that finds Redis unavailable is retried this often, this far apart, then refused.
RETRIES, RETRY_DELAY_S = 30, 2.0


def read_message(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[WebhookEvent, str | None]:
    """The event a ``webhooks.publish`` message carries, validated as ``publish`` validates it;
    ``InvalidEventError`` names each field and rule (never a value)."""
    if len(args) > len(FIELDS):
        raise InvalidEventError([f"args: at most {len(FIELDS)} (event, data, idempotency_key)"])
    given = dict(zip(FIELDS, args, strict=False))
    problems = [f"{k}: given twice, as an arg and a kwarg" for k in kwargs if k in given]
    problems += [f"{k}: unknown field, not part of the task" for k in kwargs if k not in FIELDS]
    if problems:
        raise InvalidEventError(problems)
    given.update(kwargs)
    key = given.pop("idempotency_key", None)
    problems = []
    if key is not None and not (isinstance(key, str) and IDEMPOTENCY_KEY.match(key)):
        problems.append(
            "idempotency_key: must be 1 to 200 printable ASCII characters without spaces"
        )
    try:
        event = validate_item(given)
    except InvalidEventError as exc:
        problems = exc.problems + problems
    if problems:
        raise InvalidEventError(problems)
    return event, key


@functools.cache
def publisher() -> Publisher:
    """This worker process's publisher (its settings, its Celery app for the trigger)."""
    return Publisher(app.webhooks_settings, celery_app=app)


@app.task(name=PUBLISH_TASK, bind=True)
def publish(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Validate and record one event; ``{"id": ...}`` or ``{"refused": [problems]}``."""
    try:
        event, key = read_message(args, kwargs)
    except InvalidEventError as exc:
        return refuse(self.request.id, exc.problems)
    try:
        (event_id,) = publisher().publish_events([event], idempotency_keys=[key] if key else None)
    except UnavailableError as exc:
        if self.request.retries >= RETRIES:
            return refuse(self.request.id, [f"redis: {exc}, {RETRIES} retries later"])
        raise self.retry(
            countdown=RETRY_DELAY_S,
            max_retries=None,
            argsrepr=REDACTED_ARGS,
            kwargsrepr=REDACTED_KWARGS,
        ) from None
    return {"id": event_id}


def refuse(task_id: str, problems: list[str]) -> dict[str, Any]:
    """One log line and one ``dlq messages`` record; the message is acknowledged."""
    reason = "refused: " + "; ".join(problems)
    log.warning("%s[%s] %s", PUBLISH_TASK, task_id, reason)
    runtime_of(app).store.bad_message(PUBLISH_TASK, reason, {"task_id": task_id})
    return {"refused": problems}


@signals.task_received.connect
def _redact(sender: Any = None, request: Any = None, **_: Any) -> None:
    """Before the task-received event Flower reads: the arguments shown as ``REDACTED_*``."""
    if request is None or request.name != PUBLISH_TASK:
        return
    request._argsrepr, request._kwargsrepr = REDACTED_ARGS, REDACTED_KWARGS
    request.request_dict["argsrepr"] = REDACTED_ARGS
    request.request_dict["kwargsrepr"] = REDACTED_KWARGS
