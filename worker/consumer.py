"""Celery's consumer, but a message it cannot use is dead-lettered, not only logged."""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)


def _text(payload: Any) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    return payload if isinstance(payload, str) else repr(payload)


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def _dead_letter(self, message: Any, reason: str) -> None:
        from worker.tasks import runtime

        task = (getattr(message, "headers", None) or {}).get("task", "?")
        try:
            runtime().store.bad_message(task, reason, _text(message.body))
        finally:
            log.error("dead-lettered a message for %s: %s", task, reason)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """Undecodable body: record it, then acknowledge (as Celery does) so it cannot loop."""
        try:
            self._dead_letter(message, f"cannot decode ({message.content_type}): {exc}")
        finally:
            message.ack()

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        """Disallowed content type or a broken task envelope: record, then let Celery reject."""
        try:
            self._dead_letter(message, f"invalid task message: {exc}")
        finally:
            super().on_invalid_task(body, message, exc)

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        """Redis went away: say, once per outage, that this worker waits it out."""
        log.warning(
            "lost the connection to Redis; reconnecting with no limit on attempts"
            " (every 2 s more, at most every 30 s) until it answers"
        )
        super().on_connection_error_after_connected(exc)
