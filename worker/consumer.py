"""Celery's consumer, but a message that cannot be decoded is dead-lettered, not just logged."""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)


class Consumer(CeleryConsumer):  # type: ignore[misc]
    def on_decode_error(self, message: Any, exc: Exception) -> None:
        from worker.tasks import runtime

        body = message.body if isinstance(message.body, str | bytes) else repr(message.body)
        if isinstance(body, bytes):
            body = body.decode("utf-8", errors="replace")
        reason = f"cannot decode ({message.content_type}): {type(exc).__name__}: {exc}"
        try:
            runtime().store.bad_message("?", reason, body)
        finally:
            log.error("dead-lettered an undecodable message: %s", reason)
            message.ack()
