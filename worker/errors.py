"""Worker-side branches of the error tree drawn in ``reseller_webhooks.producers.errors``."""

from __future__ import annotations

from reseller_webhooks.producers.errors import ConfigError, WebhooksError

__all__ = [
    "ConfigError",
    "DeliveryError",
    "OperatorError",
    "PermanentDeliveryError",
    "RefusedAddressError",
    "RetryableDeliveryError",
    "SubscriberRemovalError",
    "SubscribersDisabledError",
    "UnknownSubscriberError",
    "WebhooksError",
]


class DeliveryError(WebhooksError):
    """One attempt to one subscriber did not succeed."""

    #: What a reason calls this kind of failure before its message ("": the message says it).
    label = ""

    @property
    def reason(self) -> str:
        """As the attempt log, dead letters and pages show it: no class name."""
        return f"{self.label}: {self}" if self.label else str(self)


class RetryableDeliveryError(DeliveryError):
    """Worth another attempt later: timeout, connection error, DNS failure, 408/425/429/5xx."""


class PermanentDeliveryError(DeliveryError):
    """Another attempt would fail the same way: 410, other 4xx, a refused address."""


class RefusedAddressError(PermanentDeliveryError):
    """The subscriber URL resolves to a loopback, private, link-local or metadata address."""

    label = "refused address"


class OperatorError(WebhooksError):
    """An operator's request (CLI or console) that cannot be carried out as asked."""


class UnknownSubscriberError(OperatorError):
    """The subscriber id is not in the subscribers file."""

    def __init__(self, subscriber_id: str, path: object) -> None:
        self.subscriber_id = subscriber_id
        super().__init__(f"no subscriber {subscriber_id!r} in {path}")


class SubscribersDisabledError(OperatorError):
    """Dead letters of disabled subscribers cannot be replayed until they are enabled."""

    def __init__(self, subscriber_ids: list[str]) -> None:
        self.subscriber_ids = sorted(subscriber_ids)
        super().__init__(f"subscriber(s) {', '.join(self.subscriber_ids)} disabled")


class SubscriberRemovalError(OperatorError):
    """A new subscribers file would remove every subscriber, or one with unfinished deliveries
    (their work would be dead-lettered): refused unless an operator confirms it
    (``subscribers reload --allow-removal``)."""
