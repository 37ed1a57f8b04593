"""GraphQL: the ``resellerEditUser`` mutation -> ``reseller.user.updated``.

Documents are parsed, validated and their variables coerced by graphql-core against the schema in
``reseller.graphql``; the seed's constraints are then checked on the arguments. Only the profile's
``firstName`` and ``lastName`` have a place in the webhook payload (``name`` follows them). The
password (8 to 256 characters, as on create) is checked and dropped; ``resellerId``, ``groupId``,
``multiLoginCount`` and the profile's ``phone``, ``address``, ``city``, ``country``,
``postalCode`` and ``birthDate`` are account or personal-profile data that the payload does not
carry: validated, then dropped. The mutation's response is produced by executing the document, so
it holds exactly the fields the client selected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import Annotated, Any

from graphql import GraphQLSchema, build_schema, graphql_sync
from pydantic import AfterValidator, Field, ValidationError, field_validator

from producers.changes import apply_changes
from producers.dialects.errors import GraphQLRequestError
from producers.dialects.rest_create import Password
from producers.errors import describe_validation_error
from producers.publisher import Publisher
from producers.user import Contract, Name, OptionalText, ResellerUser

MUTATION = "resellerEditUser"
Text = Annotated[str, Field(max_length=256)]


def _iso_date(value: str) -> str:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("must be a date as YYYY-MM-DD")
    date.fromisoformat(value)  # raises ValueError for e.g. 2026-02-30
    return value


class UserProfileEdit(Contract):
    first_name: Name | None = None
    last_name: OptionalText | None = None
    phone: Annotated[str, Field(max_length=64)] | None = None
    address: Text | None = None
    city: Text | None = None
    country: Text | None = None
    postal_code: Annotated[str, Field(max_length=32)] | None = None
    birth_date: Annotated[str, AfterValidator(_iso_date)] | None = None

    @field_validator("first_name", mode="before")
    @classmethod
    def _first_name_not_null(cls, value: Any) -> Any:
        if value is None:  # only runs when the field was sent
            raise ValueError("may not be null; leave it out to keep it unchanged")
        return value


class EditUserRequest(Contract):
    """The mutation's arguments, flattened: ``id`` and the fields of ``resellerUserEdit``."""

    id: int = Field(ge=0)
    password: Password | None = None
    reseller_id: int | None = Field(default=None, ge=0)
    group_id: int | None = Field(default=None, ge=0)
    multi_login_count: int | None = Field(default=None, ge=0)
    user_profile_edit: UserProfileEdit | None = None

    def changes(self) -> dict[str, Any]:
        """The canonical fields this edit sets, camelCase (empty when nothing maps)."""
        profile = self.user_profile_edit
        if profile is None:
            return {}
        sent = profile.model_dump(by_alias=True, exclude_unset=True)
        return {k: sent[k] for k in ("firstName", "lastName") if k in sent}


@cache
def schema() -> GraphQLSchema:
    sdl = resources.files("producers.dialects").joinpath("reseller.graphql").read_text("utf-8")
    return build_schema(sdl)


def _execute(query: str, variables: Mapping[str, Any] | None, resolve: Any) -> dict[str, Any]:
    if not isinstance(query, str):
        raise GraphQLRequestError([{"message": "the query must be a string"}])
    result = graphql_sync(
        schema(), query, root_value={MUTATION: resolve}, variable_values=dict(variables or {})
    )
    if result.errors:
        secret = ((variables or {}).get("resellerUserEdit") or {}).get("password")
        raise GraphQLRequestError([_redact(e.formatted, secret) for e in result.errors])
    return result.data or {}


def _redact(error: Mapping[str, Any], secret: Any) -> dict[str, Any]:
    """graphql-core quotes offending values in its messages; a password is never quoted."""
    error = dict(error)
    if secret is not None and str(secret) and str(secret) in str(error.get("message", "")):
        error["message"] = str(error["message"]).replace(str(secret), "***")
    return error


def parse_edit(query: str, variables: Mapping[str, Any] | None = None) -> EditUserRequest:
    """Parse, validate and coerce a ``resellerEditUser`` request; raises GraphQLRequestError."""
    calls: list[dict[str, Any]] = []

    def capture(_info: Any, **arguments: Any) -> None:
        calls.append(arguments)

    _execute(query, variables, capture)
    if len(calls) != 1:
        raise GraphQLRequestError(
            [{"message": f"expected exactly one {MUTATION} mutation, got {len(calls)}"}]
        )
    arguments = {"id": calls[0]["id"], **(calls[0].get("resellerUserEdit") or {})}
    try:
        return EditUserRequest.model_validate(arguments)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        problems = describe_validation_error(errors, what="ResellerUserEdit input")
        raise GraphQLRequestError([{"message": p, "path": [MUTATION]} for p in problems]) from None


def apply_edit(
    current: ResellerUser, request: EditUserRequest, *, now: datetime | None = None
) -> tuple[ResellerUser, frozenset[str]]:
    return apply_changes(current, request.changes(), now=now)


def edit_response(
    query: str,
    variables: Mapping[str, Any] | None,
    user: ResellerUser,
    account: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"data": {"resellerEditUser": {...}}}`` with the fields the document selected.

    ``account`` supplies what the canonical user lacks: ``username``, ``resellerId``,
    ``enabled``, ``radAccess``, ``radAccessClear``.
    """
    wire = user.to_wire()
    obj = {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "createdAt": wire["createdAt"],
        "updatedAt": wire["updatedAt"],
        **(account or {}),
    }
    return {"data": _execute(query, variables, lambda _info, **_args: obj)}


def publish_edit(
    publisher: Publisher,
    query: str,
    variables: Mapping[str, Any] | None,
    current: ResellerUser,
    *,
    account: Mapping[str, Any] | None = None,
    publish_unchanged: bool = False,
) -> tuple[str | None, dict[str, Any]]:
    """Validate, apply, publish ``reseller.user.updated`` (unless nothing changed), respond."""
    user, changed = apply_edit(current, parse_edit(query, variables))
    event_id = publisher.user_updated(user) if changed or publish_unchanged else None
    return event_id, edit_response(query, variables, user, account)
