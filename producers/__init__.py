"""What an API service imports to emit reseller user events.

Light on purpose: pydantic, celery/kombu and redis only; no HTTP client, no worker code.

The names below are imported on first use (PEP 562), so that importing one submodule (the error
tree, the wire contract: what every command line of the worker starts with) does not also load
the publisher and Celery.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reseller_webhooks.producers.errors import (
        IdempotencyKeyReusedError,
        InvalidEventError,
        ProducerError,
        UnavailableError,
        WebhooksError,
    )
    from reseller_webhooks.producers.events import (
        EventType,
        WebhookEvent,
        build_event,
        new_event_id,
    )
    from reseller_webhooks.producers.publisher import Publisher
    from reseller_webhooks.producers.settings import ProducerSettings
    from reseller_webhooks.producers.user import Address, Organization, ResellerUser

#: public name -> the submodule that defines it
_HOMES = {
    "IdempotencyKeyReusedError": "errors",
    "InvalidEventError": "errors",
    "ProducerError": "errors",
    "UnavailableError": "errors",
    "WebhooksError": "errors",
    "EventType": "events",
    "WebhookEvent": "events",
    "build_event": "events",
    "new_event_id": "events",
    "Publisher": "publisher",
    "ProducerSettings": "settings",
    "Address": "user",
    "Organization": "user",
    "ResellerUser": "user",
}

__all__ = [
    "Address",
    "EventType",
    "IdempotencyKeyReusedError",
    "InvalidEventError",
    "Organization",
    "ProducerError",
    "ProducerSettings",
    "Publisher",
    "ResellerUser",
    "UnavailableError",
    "WebhookEvent",
    "WebhooksError",
    "build_event",
    "new_event_id",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
