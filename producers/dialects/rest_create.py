"""REST create: ``POST /v3/resellers/{resellerId}/users`` -> ``reseller.user.created``.

The request body is validated with every constraint of the seed; its password is checked (8 to
256 characters) and kept as a secret that is never printed and never reaches an event. The event
is built from the created user, the 201 response object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, EmailStr, SecretStr

from reseller_webhooks.producers.dialects.body import UserEvents, parse_body
from reseller_webhooks.producers.events import EventType, WebhookEvent, build_event
from reseller_webhooks.producers.user import Contract, Name, OptionalText, ResellerUser, Role


def _password_length(value: SecretStr) -> SecretStr:
    length = len(value.get_secret_value())
    if not 8 <= length <= 256:
        raise ValueError(f"must be 8 to 256 characters, got {length}")
    return value


Password = Annotated[SecretStr, AfterValidator(_password_length)]


class CreateUserRequest(Contract):
    """The request body schema of the seed, field for field."""

    first_name: Name
    last_name: OptionalText | None = None
    email: EmailStr
    role: Role
    company: OptionalText | None = None
    organization_id: OptionalText | None = None
    allow_customer_portal_access: bool
    password: Password


def parse_request(body: Any) -> CreateUserRequest:
    """Validate a request body; :class:`InvalidRequestError` (400) names every problem."""
    return parse_body(CreateUserRequest, body, what="create request schema")


def created_event(created_user: ResellerUser | Mapping[str, Any]) -> WebhookEvent:
    """The ``reseller.user.created`` event for the 201 response object."""
    return build_event(EventType.USER_CREATED, created_user)


def publish_created(publisher: UserEvents, created_user: ResellerUser | Mapping[str, Any]) -> str:
    """Publish ``reseller.user.created`` for the created user; returns the event id."""
    return publisher.user_created(created_user)
