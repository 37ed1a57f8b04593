"""Worker-side branches of the error tree drawn in ``producers.errors``."""

from __future__ import annotations

from producers.errors import ConfigError, WebhooksError

__all__ = [
    "ConfigError",
    "DeliveryError",
    "PermanentDeliveryError",
    "RefusedAddressError",
    "RetryableDeliveryError",
    "WebhooksError",
]


class DeliveryError(WebhooksError):
    """One attempt to one subscriber did not succeed."""


class RetryableDeliveryError(DeliveryError):
    """Worth another attempt later: timeout, connection error, DNS failure, 408/425/429/5xx."""


class PermanentDeliveryError(DeliveryError):
    """Another attempt would fail the same way: 410, other 4xx, a refused address."""


class RefusedAddressError(PermanentDeliveryError):
    """The subscriber URL resolves to a loopback, private, link-local or metadata address."""
