"""What an API service imports to emit reseller user events.

Light on purpose: pydantic, celery/kombu and redis only; no HTTP client, no worker code.
"""

from reseller_webhooks.producers.errors import (
    IdempotencyKeyReusedError,
    InvalidEventError,
    ProducerError,
    UnavailableError,
    WebhooksError,
)
from reseller_webhooks.producers.events import EventType, WebhookEvent, build_event, new_event_id
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.user import Address, Organization, ResellerUser

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
