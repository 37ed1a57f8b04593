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
from pydantic import AfterValidator, EmailStr, Field, StringConstraints

from reseller_webhooks.producers.dialects.body import UserEvents, apply_request, parse_body
from reseller_webhooks.producers.dialects.errors import (
    InvalidRequestError,
    InvalidValueError,
    PatchTestFailedError,
    PathNotFoundError,
    require_user,
)
from reseller_webhooks.producers.user import (
    Contract,
    Name,
    OptionalText,
    ResellerUser,
    format_timestamp,
)

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Operations whose ``path`` may name a member or index that does not exist yet.
ADDING = frozenset({"add", "move", "copy"})


def _role_name(value: str) -> str:
    if "," in value or value != value.strip():
        raise ValueError("a role has no commas and no leading or trailing spaces")
    return value


RoleName = Annotated[
    str, StringConstraints(min_length=1, max_length=256), AfterValidator(_role_name)
]


class PatchedUser(Contract):
    """What the document must look like after the patch."""

    display_name: str = Field(min_length=1, max_length=513)
    first_name: Name
    last_name: OptionalText | None = None
    email: EmailStr
    roles: list[RoleName] = Field(min_length=1)


#: The document's properties: a path to anything else is the seed's "not found" (400).
PROPERTIES = frozenset(f.alias or name for name, f in PatchedUser.model_fields.items())


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
    if not GUID.fullmatch(tenant_id):
        raise InvalidValueError(tenant_id)
    if not GUID.fullmatch(user_id):
        raise InvalidValueError(user_id)


def _index(part: str) -> int | None:
    return int(part) if re.fullmatch(r"0|[1-9][0-9]*", part) else None


def _missing_segment(document: Any, pointer: str, *, adding: bool) -> str | None:
    """The first segment of ``pointer`` that does not resolve in ``document``, if any.

    With ``adding``, the last segment may be a new member, ``-`` or the index one past the end.
    """
    parts = jsonpointer.JsonPointer(pointer).parts
    node = document
    for i, part in enumerate(parts):
        last = adding and i == len(parts) - 1
        index = _index(part)
        if isinstance(node, dict) and (part in node or last):
            node = node.get(part)
        elif isinstance(node, list) and index is not None and index < len(node):
            node = node[index]
        elif isinstance(node, list) and last and (part == "-" or index == len(node)):
            node = None
        else:
            return part
    return None


def _pointers(op: dict[str, Any]) -> list[tuple[str, bool]]:
    """``(pointer, adding)`` for the operation's ``from`` (if it has one) and ``path``."""
    from_ = [(op["from"], False)] if op["op"] in ("move", "copy") and "from" in op else []
    return [*from_, (op["path"], op["op"] in ADDING)]


def _invalid(index: int, reason: object) -> InvalidRequestError:
    return InvalidRequestError([f"body[{index}]: not a valid JSON Patch operation: {reason}"])


def apply_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    """Apply the operations one by one, translating failures into the seed's errors."""
    if not isinstance(operations, list):
        raise InvalidRequestError(["body: must be a JSON array of patch operations"])
    try:
        jsonpatch.JsonPatch(operations)  # checks each operation's name and path up front
    except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException, TypeError) as exc:
        raise InvalidRequestError([f"body: not a valid JSON Patch: {exc}"]) from None
    for index, op in enumerate(operations):
        try:
            pointers = _pointers(op)
            tops = [jsonpointer.JsonPointer(p).parts[:1] for p, _ in pointers]
        except (jsonpointer.JsonPointerException, TypeError) as exc:
            raise _invalid(index, exc) from None
        for top in tops:
            if top and top[0] not in PROPERTIES:
                raise PathNotFoundError(top[0])
        try:
            document = jsonpatch.JsonPatch([op]).apply(document)
        except jsonpatch.JsonPatchTestFailed:
            raise PatchTestFailedError(op["path"]) from None
        except jsonpatch.InvalidJsonPatch as exc:
            raise _invalid(index, exc) from None
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
            for pointer, adding in pointers:
                segment = _missing_segment(document, pointer, adding=adding)
                if segment is not None:
                    raise PathNotFoundError(segment) from None
            raise _invalid(index, exc) from None  # e.g. a move into its own child
    return document


def patch_user(
    tenant_id: str,
    user_id: str,
    current: ResellerUser | None,
    operations: Any,
    *,
    now: datetime | None = None,
) -> tuple[ResellerUser, frozenset[str]]:
    """The patched user and the canonical fields that changed; raises the seed's errors.

    ``current`` is the user the service loaded for the two ids (None: 404).
    """
    check_ids(tenant_id, user_id)
    user = require_user(current)
    before = to_document(user)
    after = apply_patch(copy.deepcopy(before), operations)
    patched = parse_body(PatchedUser, after, what="user")
    view = patched.model_dump(mode="json", by_alias=True)
    changes: dict[str, Any] = {}
    if view["displayName"] != before["displayName"]:
        changes["name"] = view["displayName"]
    for field in ("firstName", "lastName", "email"):
        if view[field] != before[field]:
            changes[field] = view[field]
    if view["roles"] != before["roles"]:
        changes["role"] = ",".join(dict.fromkeys(view["roles"]))
    return apply_request(user, changes, now=now)


def success_response(now: datetime | None = None) -> dict[str, str]:
    """The seed's 200 body."""
    return {"status": "success", "timestamp": format_timestamp(now or datetime.now(UTC))}


def publish_patch(
    publisher: UserEvents,
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
