"""What the dialects share: validating a request body, applying it through the change core, and
the two publisher calls they make. Each keeps a refusal a 400 that names field and rule."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from reseller_webhooks.producers.changes import apply_changes
from reseller_webhooks.producers.dialects.errors import InvalidRequestError
from reseller_webhooks.producers.errors import InvalidEventError, describe_validation_error
from reseller_webhooks.producers.user import ResellerUser

Model = TypeVar("Model", bound=BaseModel)


class UserEvents(Protocol):
    """The part of :class:`~reseller_webhooks.producers.publisher.Publisher` a dialect uses."""

    def user_created(self, user: ResellerUser | Mapping[str, Any]) -> str: ...

    def user_updated(self, user: ResellerUser | Mapping[str, Any]) -> str: ...


def parse_body(model: type[Model], body: Any, *, what: str) -> Model:
    """``model`` from a JSON object; :class:`InvalidRequestError` (400) names every problem."""
    if not isinstance(body, Mapping):
        raise InvalidRequestError([f"body: must be a JSON object, got {type(body).__name__}"])
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise InvalidRequestError(describe_validation_error(errors, what=what)) from None


def apply_request(
    current: ResellerUser, changes: Mapping[str, Any], *, now: datetime | None = None
) -> tuple[ResellerUser, frozenset[str]]:
    """:func:`~changes.apply_changes`, with a contract refusal answered as a 400.

    The request caused it (a joined role list too long, say), so it is the client's error.
    """
    try:
        return apply_changes(current, changes, now=now)
    except InvalidEventError as exc:
        raise InvalidRequestError([p.removeprefix("data.") for p in exc.problems]) from None
