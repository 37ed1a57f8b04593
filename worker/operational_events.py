"""Operational events: what the worker itself tells subscribers about the delivery pipeline.

``webhooks.subscriber.failing`` (N consecutive failed attempts, ``WEBHOOKS_FAILING_AFTER``),
``webhooks.subscriber.disabled``, ``webhooks.subscriber.recovered`` and
``webhooks.delivery.dead`` are decided inside the script that records an attempt
(``lua/finish.lua``), where the state changes, so each incident is announced once however many
workers record attempts at the same time. The script records the event exactly as a publish
records one (an event record and its id at the end of the pending list), so the same drain,
fan-out, signing and retries deliver it: to every subscriber whose patterns match it, never to
the subscriber it is about. A dead operational event is not itself announced (no loop).
``webhooks.store.reset`` (Redis came back empty or behind, ``ops.store_guard``) is recorded the
same way by the first process to notice, and delivered once an operator accepts the reset.

Producers never publish these types: they exist on the worker side only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from reseller_webhooks.producers.events import EVENT_TYPES

log = logging.getLogger(__name__)


class OperationalEvent(StrEnum):
    SUBSCRIBER_FAILING = "webhooks.subscriber.failing"
    SUBSCRIBER_DISABLED = "webhooks.subscriber.disabled"
    SUBSCRIBER_RECOVERED = "webhooks.subscriber.recovered"
    DELIVERY_DEAD = "webhooks.delivery.dead"
    STORE_RESET = "webhooks.store.reset"


OPERATIONAL_EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in OperationalEvent)

#: Every type a subscriber may subscribe to: the producers' events, then the operational ones.
WORKER_EVENT_TYPES: tuple[str, ...] = EVENT_TYPES + OPERATIONAL_EVENT_TYPES

#: Default of ``WEBHOOKS_FAILING_AFTER``: consecutive failed attempts before ``failing``.
DEFAULT_FAILING_AFTER = 5


def log_emitted(raw: Sequence[Sequence[Any]]) -> None:
    """Log at WARNING each operational event a script recorded: {type, event id, subscriber,
    delivery id or ''}. Ids only, never the body."""
    for kind, event_id, about, delivery in raw:
        kind, event_id, about = _text(kind), _text(event_id), _text(about)
        detail = f", delivery {_text(delivery)}" if delivery else ""
        log.warning("%s: subscriber %s%s (event %s)", kind, about, detail, event_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
