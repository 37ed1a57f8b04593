"""The webhook envelope: ``{"event", "data", "triggeredAt"}`` and the event id it travels under."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError
from pydantic.alias_generators import to_camel

from reseller_webhooks.producers.errors import InvalidEventError, describe_validation_error
from reseller_webhooks.producers.user import ResellerUser, Timestamp


class EventType(StrEnum):
    USER_CREATED = "reseller.user.created"
    USER_UPDATED = "reseller.user.updated"


EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)

#: Default largest body (``WEBHOOKS_MAX_BODY_BYTES``): a user object is about 1 kB, and
#: receivers commonly refuse requests over 1 MB; Standard Webhooks advises small payloads.
DEFAULT_MAX_BODY_BYTES = 256 * 1024


def new_event_id() -> str:
    """``msg_`` + 24 url-safe random characters; never a ``.`` (the id is signed too)."""
    return "msg_" + secrets.token_urlsafe(18)


class WebhookEvent(BaseModel):
    """What a subscriber receives, exactly: the body is :meth:`body` and nothing else."""

    model_config = ConfigDict(
        alias_generator=to_camel, frozen=True, extra="forbid", populate_by_name=True
    )

    event: EventType
    data: ResellerUser
    triggered_at: Timestamp

    _body: bytes | None = PrivateAttr(default=None)

    def fingerprint(self) -> str:
        """SHA-256 of the event type and the data (not of the time it was triggered): what an
        idempotency key is bound to, so the same key with another event can be refused.

        Hashes the body up to ``triggeredAt``, its last field: inside the data every ``"`` is
        escaped, so the last ``,"triggeredAt":`` is the envelope's own (no second dump)."""
        body = self.body()
        return hashlib.sha256(body[: body.rindex(b',"triggeredAt":')]).hexdigest()

    def body(self) -> bytes:
        """The exact bytes that are signed and POSTed (compact JSON, camelCase, UTF-8)."""
        if self._body is None:  # built once: the size check and the publisher both need it
            self._body = self.model_dump_json(by_alias=True).encode()
        return self._body


def parse_event_type(event: str | EventType) -> EventType:
    try:
        return EventType(event)
    except ValueError:
        raise InvalidEventError(
            [f"event: unknown event type {event!r}; expected one of {', '.join(EVENT_TYPES)}"]
        ) from None


def validate_user(data: ResellerUser | Mapping[str, Any]) -> ResellerUser:
    """Validate a user (model or camelCase mapping), raising :class:`InvalidEventError`."""
    if isinstance(data, ResellerUser):
        return data
    if not isinstance(data, Mapping):
        raise InvalidEventError([f"data: must be a JSON object, got {type(data).__name__}"])
    try:
        return ResellerUser.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidEventError(
            describe_validation_error(
                exc.errors(include_url=False, include_input=False),
                "data",
                what="reseller user contract",
            )
        ) from None


def build_event(
    event: str | EventType,
    data: ResellerUser | Mapping[str, Any],
    *,
    triggered_at: datetime | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> WebhookEvent:
    """Validate everything at once and return the envelope: the gate every publish passes.

    An event whose body would exceed ``max_body_bytes`` is refused with its size and the limit.
    """
    problems: list[str] = []
    event_type: EventType | None = None
    user: ResellerUser | None = None
    try:
        event_type = parse_event_type(event)
    except InvalidEventError as exc:
        problems += exc.problems
    try:
        user = validate_user(data)
    except InvalidEventError as exc:
        problems += exc.problems
    if problems or event_type is None or user is None:
        raise InvalidEventError(problems)
    envelope = WebhookEvent(
        event=event_type, data=user, triggered_at=triggered_at or datetime.now(UTC)
    )
    size = len(envelope.body())
    if size > max_body_bytes:
        raise InvalidEventError(
            [
                f"data: the event body would be {size} bytes, over the limit of"
                f" {max_body_bytes} bytes (WEBHOOKS_MAX_BODY_BYTES)"
            ]
        )
    return envelope
