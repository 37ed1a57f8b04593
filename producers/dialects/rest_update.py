"""REST partial update: ``PATCH /v3/resellers/{resellerId}/users/{id}`` -> ``.updated``.

Only the fields present change. ``null`` decides by field: it clears an optional field
(``lastName``, ``company``, ``organizationId``) and is refused for one a user cannot be without
(``firstName``, ``email``, ``role``, ``allowCustomerPortalAccess``); to leave a field unchanged,
leave it out. ``allowCustomerPortalAccess`` is not part of the webhook payload, so changing only it
publishes nothing (unless ``publish_unchanged``). When ``organizationId`` changes, the nested
``organization`` no longer describes the user's organization: pass the new one, or it becomes
``null`` rather than stale. No current user (the service found none): 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import EmailStr, field_validator

from reseller_webhooks.producers.dialects.body import UserEvents, apply_request, parse_body
from reseller_webhooks.producers.dialects.errors import require_user
from reseller_webhooks.producers.user import (
    Contract,
    Name,
    OptionalText,
    Organization,
    ResellerUser,
    Role,
)

NOT_NULLABLE = ("first_name", "email", "role", "allow_customer_portal_access")


class UpdateUserRequest(Contract):
    """The seed's request body: every field optional, same constraints as on create."""

    first_name: Name | None = None
    last_name: OptionalText | None = None
    email: EmailStr | None = None
    role: Role | None = None
    company: OptionalText | None = None
    organization_id: OptionalText | None = None
    allow_customer_portal_access: bool | None = None

    @field_validator(*NOT_NULLABLE, mode="before")
    @classmethod
    def _null_only_where_it_clears(cls, value: Any) -> Any:
        if value is None:  # only runs for fields present in the body
            raise ValueError("may not be null; leave it out to keep it unchanged")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields present, camelCase, in wire form (payload fields only)."""
        present = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        present.pop("allowCustomerPortalAccess", None)
        return present


def parse_request(body: Any) -> UpdateUserRequest:
    """Validate a request body; :class:`InvalidRequestError` (400) names every problem."""
    return parse_body(UpdateUserRequest, body, what="update request schema")


def apply_update(
    current: ResellerUser,
    request: UpdateUserRequest,
    *,
    organization: Organization | None = None,
    now: datetime | None = None,
) -> tuple[ResellerUser, frozenset[str]]:
    """The updated user and the names of the payload fields that changed."""
    changes = request.changes()
    new_org = changes.get("organizationId", current.organization_id)
    if organization is not None:
        changes["organization"] = organization.model_dump(mode="json", by_alias=True)
    elif new_org != current.organization_id:
        changes["organization"] = None
    return apply_request(current, changes, now=now)


def publish_update(
    publisher: UserEvents,
    current: ResellerUser | None,
    body: Any,
    *,
    organization: Organization | None = None,
    publish_unchanged: bool = False,
) -> str | None:
    """Validate, apply and publish ``reseller.user.updated``; None when nothing changed.

    ``current`` is the user the service loaded for the path's ``id`` (None: 404).
    """
    user = require_user(current)
    new, changed = apply_update(user, parse_request(body), organization=organization)
    if not changed and not publish_unchanged:
        return None
    return publisher.user_updated(new)
