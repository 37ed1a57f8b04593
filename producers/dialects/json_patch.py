"""JSON Patch: ``PATCH /v1.0/accounts/{ACCOUNT_TENANT_ID}/users/{USER_ID}``.

The patch (RFC 6902 mechanics by ``jsonpatch``) is applied to this dialect's view of the user,
then mapped onto the canonical user and published as ``reseller.user.updated``:

- ``displayName`` -> ``name``
- ``firstName`` / ``lastName`` -> the same (``name`` follows them unless patched too)
- ``email`` -> ``email``
- ``roles`` (array) -> ``role`` (string, roles joined with ``,``); ``replace`` on ``/roles``
  replaces the whole set, as the seed warns

Tenant and user ids are GUIDs. Errors carry the seed's statuses and texts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import jsonpatch
import jsonpointer
from pydantic import EmailStr, Field, StringConstraints

from producers.changes import apply_changes
from producers.dialects.body import parse_body
from producers.dialects.errors import (
    InvalidRequestError,
    InvalidValueError,
    NotFoundError,
    PatchTestFailedError,
    PathNotFoundError,
)
from producers.publisher import Publisher
from producers.user import Contract, Name, OptionalText, ResellerUser, format_timestamp

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
RoleName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^,]+$")]


class PatchedUser(Contract):
    """What the document must look like after the patch."""

    display_name: str = Field(min_length=1, max_length=513)
    first_name: Name
    last_name: OptionalText | None = None
    email: EmailStr
    roles: list[RoleName] = Field(min_length=1)


def roles_of(role: str) -> list[str]:
    return [r.strip() for r in role.split(",") if r.strip()]


def to_document(user: ResellerUser) -> dict[str, Any]:
    """The dialect's view of a canonical user."""
    return {
        "displayName": user.name,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "email": user.email,
        "roles": roles_of(user.role),
    }


def check_ids(tenant_id: str, user_id: str) -> None:
    """Bad Request (1) and (2) of the seed: ids must be GUIDs."""
    if not GUID.match(tenant_id):
        raise InvalidValueError(tenant_id)
    if not GUID.match(user_id):
        raise InvalidValueError(user_id)


def _missing_segment(document: Any, pointer: str) -> str:
    """The first segment of ``pointer`` that does not resolve in ``document``."""
    node = document
    for part in jsonpointer.JsonPointer(pointer).parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return part
    return pointer.rsplit("/", 1)[-1]


def apply_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    """Apply the operations one by one, translating failures into the seed's errors."""
    if not isinstance(operations, list):
        raise InvalidRequestError(["body: must be a JSON array of patch operations"])
    try:
        jsonpatch.JsonPatch(operations)  # validates every operation before any is applied
    except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException, TypeError) as exc:
        raise InvalidRequestError([f"body: not a valid JSON Patch: {exc}"]) from None
    for op in operations:
        for pointer in (op.get("from"), op["path"]):
            if pointer:
                top = jsonpointer.JsonPointer(pointer).parts[:1]
                if not top or top[0] not in document:
                    raise PathNotFoundError(top[0] if top else "")
        try:
            document = jsonpatch.JsonPatch([op]).apply(document)
        except jsonpatch.JsonPatchTestFailed:
            raise PatchTestFailedError(op["path"]) from None
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException):
            broken = op.get("from") if op["op"] in ("move", "copy") else op["path"]
            raise PathNotFoundError(_missing_segment(document, broken)) from None
    return document


def patch_user(
    tenant_id: str,
    user_id: str,
    current: ResellerUser | None,
    operations: Any,
    *,
    now: datetime | None = None,
) -> tuple[ResellerUser, frozenset[str]]:
    """The patched user and the canonical fields that changed; raises the seed's errors."""
    check_ids(tenant_id, user_id)
    if current is None:
        raise NotFoundError()
    before = to_document(current)
    after = apply_patch(copy.deepcopy(before), operations)
    patched = parse_body(PatchedUser, after, what="user")
    changes: dict[str, Any] = {}
    if patched.display_name != before["displayName"]:
        changes["name"] = patched.display_name
    for field in ("firstName", "lastName", "email"):
        value = after.get(field)
        if value != before[field]:
            changes[field] = value
    if patched.roles != before["roles"]:
        changes["role"] = ",".join(dict.fromkeys(patched.roles))
    return apply_changes(current, changes, now=now)


def success_response(now: datetime | None = None) -> dict[str, str]:
    """The seed's 200 body."""
    return {"status": "success", "timestamp": format_timestamp(now or datetime.now(UTC))}


def publish_patch(
    publisher: Publisher,
    tenant_id: str,
    user_id: str,
    current: ResellerUser | None,
    operations: Sequence[Any],
    *,
    publish_unchanged: bool = False,
) -> str | None:
    """Validate, apply and publish ``reseller.user.updated``; None when nothing changed."""
    user, changed = patch_user(tenant_id, user_id, current, operations)
    if not changed and not publish_unchanged:
        return None
    return publisher.user_updated(user)
