"""The project's one error tree.

    WebhooksError                     root of everything this project raises on purpose
    +-- ProducerError                 bad input at publish time; carries an HTTP status
    |   +-- InvalidEventError         the event or its data breaks the contract (422)
    |   +-- (dialect errors)          see producers.dialects: seed-specified texts and statuses
    +-- ConfigError                   settings or subscribers file invalid (worker will not start)
    +-- DeliveryError                 one attempt to one subscriber failed (worker.errors)
        +-- RetryableDeliveryError    timeout, connection error, 408/425/429/5xx
        +-- PermanentDeliveryError    410, other 4xx, refused address

The worker-side branches live in ``worker.errors``; they subclass the roots defined here so that
``producers`` never imports worker code.
"""

from __future__ import annotations

from collections.abc import Sequence


class WebhooksError(Exception):
    """Root of every error this project raises deliberately."""


class ConfigError(WebhooksError):
    """Settings or the subscribers file are invalid; the message names the field and the rule."""


class ProducerError(WebhooksError):
    """Input refused at publish time. ``status`` is the HTTP status an API service should answer."""

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, object]:
        return {"error": self.status, "message": self.message, "status": "error"}


class InvalidEventError(ProducerError):
    """The event type or its data breaks the contract; nothing was enqueued.

    ``problems`` holds one ``"<field path>: <rule>"`` line per violation.
    """

    status = 422

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid event: " + "; ".join(self.problems))
