"""The project's one error tree.

    WebhooksError                     root of everything this project raises on purpose
    +-- ProducerError                 publishing refused; carries an HTTP status
    |   +-- InvalidEventError         the event or its data breaks the contract (422)
    |   +-- UnavailableError          Redis unreachable or refusing commands; nothing recorded (503)
    |   +-- IdempotencyKeyReusedError an idempotency key sent again with another event (422)


    |   +-- StoreResetError           Redis came back empty or behind, not yet accepted (503)
    |   +-- DialectError              an API dialect refused its request (dialects.errors)
    |       +-- InvalidRequestError   a body breaks the dialect's constraints (400)
    |       +-- InvalidValueError     "The value '<x>' is not valid." (400)
    |       +-- PathNotFoundError     "The target location specified by path segment ..." (400)
    |       +-- PatchTestFailedError  a JSON Patch ``test`` operation failed (409)
    |       +-- GraphQLRequestError   parse, validation or variable errors (400)
    |       +-- NotFoundError         "Not Found" (404)
    +-- ConfigError                   settings or subscribers file invalid (worker will not start)
    +-- NotReplicatedError            published, but no Redis replica confirmed it in time (503)
    +-- DeliveryError                 one attempt to one subscriber failed (worker.errors)
        +-- RetryableDeliveryError    timeout, connection error, 408/425/429/5xx
        +-- PermanentDeliveryError    410, other 4xx, refused address
    +-- OperatorError                 an operator's request cannot be carried out (worker.errors)
        +-- UnknownSubscriberError    the subscriber id is not in the subscribers file
        +-- SubscribersDisabledError  a replay of dead letters of disabled subscribers
        +-- SubscriberRemovalError    a reload would drop every subscriber or unfinished work

The worker-side branches live in ``worker.errors``; they subclass the roots defined here so that
``producers`` never imports worker code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


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
        """The error body the seeds document: ``{error, message, status, timestamp}``."""
        from reseller_webhooks.producers.user import format_timestamp

        return {
            "error": self.status,
            "message": self.message,
            "status": "error",
            "timestamp": format_timestamp(datetime.now(UTC)),
        }


class InvalidEventError(ProducerError):
    """The event type or its data breaks the contract; nothing was enqueued.

    ``problems`` holds one ``"<field path>: <rule>"`` line per violation.
    """

    status = 422

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid event: " + "; ".join(self.problems))


class UnavailableError(ProducerError):
    """Redis could not be reached or refused the command; the caller may try again later (a
    publish may or may not have been recorded: retrying with the same idempotency key is safe).

    The message names Redis and the kind of failure, never the URL (it may carry a password).
    """

    status = 503

    def __init__(self, detail: str = "") -> None:
        super().__init__("Redis is unavailable" + (f" ({detail})" if detail else ""))

    @classmethod
    def from_exception(cls, exc: BaseException) -> UnavailableError:
        """Translate a client exception by its kind only: redis-py and kombu messages may hold
        the URL."""
        return cls(type(exc).__name__)


class IdempotencyKeyReusedError(ProducerError):
    """An idempotency key still held by an earlier event came with a different event type or
    data; nothing was recorded. The same key with the same event answers the first id; a new
    event needs a new key. The message names the key's position, never the key or the data.
    """

    status = 422

    def __init__(self, position: str = "idempotency_key") -> None:
        super().__init__(
            f"{position}: already used for a different event (another event type or data) within"
            " its retention (WEBHOOKS_IDEMPOTENCY_RETENTION_S); nothing was recorded: send a new"
            " event under a new key"
        )


class StoreResetError(ProducerError):
    """Redis came back empty, as another store or behind where this publisher saw it
    (``store_identity``): nothing is recorded until an operator accepts the reset
    (``reseller-webhooks store accept-reset``); publishing again afterwards is safe."""

    status = 503


def describe_validation_error(
    errors: Sequence[Mapping[str, Any]], prefix: str = "", *, what: str = "contract"
) -> list[str]:
    """``"<field path>: <rule>"`` for each pydantic error; never echoes an input value."""
    problems = []
    for error in errors:
        loc = ".".join(str(p) for p in error["loc"])
        where = ".".join(p for p in (prefix, loc) if p) or "body"
        if error["type"] == "extra_forbidden":
            field = str(error["loc"][-1])
            if field.lower() == "password" and what == "reseller user contract":
                problems.append(f"{where}: not allowed: a password never leaves the producer")
            else:
                problems.append(f"{where}: unknown field, not part of the {what}")
            continue
        problems.append(f"{where}: " + str(error["msg"]).removeprefix("Value error, "))
    return problems


class NotReplicatedError(WebhooksError):
    """The events were written to the Redis master, but fewer replicas than
    ``WEBHOOKS_PUBLISH_REPLICAS`` confirmed them in time: a failover now could lose them.

    They will most likely be delivered anyway; publishing again may deliver them twice, under new
    ids. ``status`` is what an API service should answer (503: try again).
    """

    status = 503

    def __init__(self, acked: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"published, but {acked} of {wanted} Redis replica(s) confirmed it within"
            f" {timeout_ms} ms (WEBHOOKS_PUBLISH_REPLICAS)"
        )
        self.acked = acked
        self.wanted = wanted
