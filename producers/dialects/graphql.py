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
from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import Annotated, Any

from graphql import (
    GraphQLError,
    GraphQLSchema,
    ObjectFieldNode,
    StringValueNode,
    Visitor,
    build_schema,
    graphql_sync,
    parse,
    print_ast,
    visit,
)
from graphql.pyutils import inspect
from pydantic import AfterValidator, Field, ValidationError, field_validator

from reseller_webhooks.producers.dialects.body import UserEvents, apply_request
from reseller_webhooks.producers.dialects.errors import GraphQLRequestError, InvalidRequestError
from reseller_webhooks.producers.dialects.rest_create import Password
from reseller_webhooks.producers.errors import describe_validation_error
from reseller_webhooks.producers.user import Contract, Name, OptionalText, ResellerUser

MUTATION = "resellerEditUser"
Text = Annotated[str, Field(max_length=256)]
#: The user being edited, or a function from the mutation's ``id`` to it (None: 404).
CurrentUser = ResellerUser | Callable[[int], ResellerUser | None] | None


def _iso_date(value: str) -> str:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("must be a date as YYYY-MM-DD")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a calendar date (YYYY-MM-DD)") from None
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
    sdl = (
        resources.files("reseller_webhooks.producers.dialects")
        .joinpath("reseller.graphql")
        .read_text("utf-8")
    )
    return build_schema(sdl)


class _PasswordLiterals(Visitor):
    """Collects how ``password`` values written into the document itself would be quoted."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def enter_object_field(self, node: ObjectFieldNode, *_: Any) -> None:
        if node.name.value == "password":
            self.found.append(print_ast(node.value))
            if isinstance(node.value, StringValueNode):
                self.found.append(node.value.value)


def _secrets(query: str, variables: Mapping[str, Any]) -> list[str]:
    """Every form in which graphql-core could quote a password of this request."""
    found: list[str] = []
    edit = variables.get("resellerUserEdit")
    if isinstance(edit, Mapping) and edit.get("password") is not None:
        found += [str(edit["password"]), inspect(edit["password"])]
    try:
        literals = _PasswordLiterals()
        visit(parse(query), literals)
        found += literals.found
    except GraphQLError:
        pass  # a syntax error quotes no values
    return sorted({s for s in found if s}, key=len, reverse=True)


def _redact(error: Mapping[str, Any], secrets: list[str]) -> dict[str, Any]:
    """graphql-core quotes offending values in its messages; a password is never quoted."""
    error = dict(error)
    message = str(error.get("message", ""))
    for secret in secrets:
        message = message.replace(secret, "***")
    error["message"] = message
    return error


def _execute(
    query: Any, variables: Any, resolve: Any, operation_name: str | None
) -> dict[str, Any]:
    if not isinstance(query, str):
        raise GraphQLRequestError([{"message": "the query must be a string"}])
    if variables is not None and not isinstance(variables, Mapping):
        raise GraphQLRequestError([{"message": "the variables must be a JSON object"}])
    values = dict(variables or {})
    result = graphql_sync(
        schema(),
        query,
        root_value={MUTATION: resolve},
        variable_values=values,
        operation_name=operation_name,
    )
    if result.errors:
        secrets = _secrets(query, values)
        raise GraphQLRequestError([_redact(e.formatted, secrets) for e in result.errors])
    return result.data or {}


def parse_edit(
    query: str, variables: Mapping[str, Any] | None = None, operation_name: str | None = None
) -> EditUserRequest:
    """Parse, validate and coerce a ``resellerEditUser`` request; raises GraphQLRequestError."""
    calls: list[dict[str, Any]] = []

    def capture(_info: Any, **arguments: Any) -> None:
        calls.append(arguments)

    _execute(query, variables, capture, operation_name)
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


def load_user(current: CurrentUser, request: EditUserRequest) -> ResellerUser:
    """The user to edit: ``current`` itself or loaded by the mutation's ``id``; else a 404."""
    user = current(request.id) if callable(current) else current
    if user is None:
        raise GraphQLRequestError([{"message": "Not Found", "path": [MUTATION]}], status=404)
    return user


def apply_edit(
    current: ResellerUser, request: EditUserRequest, *, now: datetime | None = None
) -> tuple[ResellerUser, frozenset[str]]:
    """The edited user and the payload fields that changed (empty when nothing maps)."""
    try:
        return apply_request(current, request.changes(), now=now)
    except InvalidRequestError as exc:
        raise GraphQLRequestError(
            [{"message": p, "path": [MUTATION]} for p in exc.problems]
        ) from None


def edit_response(
    query: str,
    variables: Mapping[str, Any] | None,
    user: ResellerUser,
    account: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
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
    return {"data": _execute(query, variables, lambda _info, **_args: obj, operation_name)}


def publish_edit(
    publisher: UserEvents,
    query: str,
    variables: Mapping[str, Any] | None,
    current: CurrentUser,
    *,
    account: Mapping[str, Any] | None = None,
    publish_unchanged: bool = False,
    operation_name: str | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """Validate, apply, publish ``reseller.user.updated`` (unless nothing changed), respond.

    ``current``: the user, or a function that loads it by the mutation's ``id`` (the id is
    inside the request, so the service usually passes its lookup).
    """
    request = parse_edit(query, variables, operation_name)
    user, changed = apply_edit(load_user(current, request), request)
    event_id = publisher.user_updated(user) if changed or publish_unchanged else None
    return event_id, edit_response(query, variables, user, account, operation_name)
