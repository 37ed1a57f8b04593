"""Celery's consumer, but a message it cannot run is dead-lettered and acknowledged, never fatal.

The transport (``queue.kombu_overrides``) already dropped entries that are not kombu messages at
all; what reaches this consumer is a message, but maybe not a task: a content type other than
JSON, a body that does not decode, no task name, a task this worker does not know, or a body
Celery cannot unpack into arguments. Each is recorded in ``dlq messages`` (task name, reason,
and the message's shape: size, content type, task id; never its body, which for a
``webhooks.publish`` message is personal data) and removed from the queue. Celery's own handlers
would log the body and, for some of these, raise in the event loop and stop the worker.

Wrong arguments for a known task fail inside the task and are recorded by ``queue.tasks``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, signals
from celery.worker.consumer.consumer import Consumer as CeleryConsumer

from reseller_webhooks.worker.queue.context import runtime_of
from reseller_webhooks.worker.queue.envelope import shape

log = logging.getLogger(__name__)


def record_bad_message(
    celery: Celery,
    task: str,
    reason: str,
    raw: bytes | str | None,
    content_type: Any = None,
    task_id: Any = None,
) -> None:
    """Add a record to ``dlq messages`` (the worker's store): the message's shape, not its
    body; the message itself is gone."""
    runtime_of(celery).store.bad_message(task or "?", reason, shape(raw, content_type, task_id))


def task_body_problem(body: Any) -> str | None:
    """What is wrong with a decoded protocol-2 task body, which must be ``[args, kwargs, embed]``.

    Celery unpacks it in the pool thread, where an error is swallowed: the message would stay
    unacknowledged, hold one of the worker's prefetch slots and come back after every
    visibility timeout.
    """
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        return "task body: must be [args, kwargs, embed]"
    args, kwargs, embed = body
    if not isinstance(args, (list, tuple)):
        return "task body: args must be an array"
    if not isinstance(kwargs, dict):
        return "task body: kwargs must be an object"
    if embed is not None and not isinstance(embed, dict):
        return "task body: embed must be an object or null"
    return None


def _task_name(message: Any) -> str:
    headers = getattr(message, "headers", None)
    task = headers.get("task") if isinstance(headers, dict) else None
    return task if isinstance(task, str) and task else "?"


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def _drop(self, message: Any, reason: str) -> None:
        """Record, then take the message off the queue (and out of kombu's unacked hash).

        A record that cannot be written is logged, never raised: it must not stop the consumer.
        """
        task = _task_name(message)
        log.error("dead-lettered a message for task %s: %s", task, reason)
        headers = getattr(message, "headers", None)
        try:
            record_bad_message(
                self.app,
                task,
                reason,
                getattr(message, "body", None),
                getattr(message, "content_type", None),
                headers.get("id") if isinstance(headers, dict) else None,
            )
        except Exception:
            log.exception("could not record the message for task %s", task)
        if not message.acknowledged:
            message.reject_log_error(log, self.connection_errors)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """Undecodable body."""
        self._drop(message, f"cannot decode ({message.content_type}): {exc}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        """Disallowed content type (e.g. pickle) or a broken task envelope."""
        self._drop(message, f"invalid task message: {exc}")
        signals.task_rejected.send(sender=self, message=message, exc=exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        """No task name in the headers nor in the body."""
        self._drop(message, "not a task message: no task name in the headers or body")
        signals.task_rejected.send(sender=self, message=message, exc=None)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        """A task name this worker does not run (no result backend to mark, nothing to retry)."""
        self._drop(message, "unknown task name")
        signals.task_rejected.send(sender=self, message=message, exc=exc)

    @staticmethod
    def _body_problem(message: Any) -> str | None:
        """A task message (task name in its headers) whose body decodes but cannot be unpacked.

        A body that does not decode is left to Celery, which reports it (``on_decode_error``,
        ``on_invalid_task``); the decoded body is cached on the message, not decoded twice.
        """
        headers = message.headers
        if not isinstance(headers, dict) or "task" not in headers:
            return None  # protocol 1, or not a task message: Celery's checks
        try:
            body = message.payload
        except Exception:
            return None
        return task_body_problem(body)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        """Celery's handler, with anything it raises for one message confined to that message.

        Connection errors still propagate: the message stays unacked and kombu restores it.
        kombu counts ``KeyError`` among them, but here it means a field missing from the message
        (e.g. no ``id`` header): reconnecting would restore the message and loop on it forever.
        """
        handle = super().create_task_handler(*args, **kwargs)
        connection_errors = tuple(self.connection_errors)

        def on_task_received(message: Any) -> Any:
            try:
                problem = self._body_problem(message)
                if problem:
                    self._drop(message, problem)
                    return None
                return handle(message)
            except Exception as exc:
                if isinstance(exc, connection_errors) and not isinstance(exc, LookupError):
                    raise
                self._drop(message, f"cannot be run as a task: {type(exc).__name__}: {exc}")
                return None

        return on_task_received

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Redis went away: say, once per outage, that this worker waits it out."""
        log.warning(
            "lost the connection to Redis; reconnecting with no limit on attempts"
            " (every 2 s more, at most every 30 s) until it answers"
        )
        super().on_connection_error_after_connected(exc)
