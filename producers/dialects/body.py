"""Validating a dialect's request body against its pydantic model, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from producers.dialects.errors import InvalidRequestError
from producers.errors import describe_validation_error

Model = TypeVar("Model", bound=BaseModel)


def parse_body(model: type[Model], body: Any, *, what: str) -> Model:
    """``model`` from a JSON object; :class:`InvalidRequestError` (400) names every problem."""
    if not isinstance(body, Mapping):
        raise InvalidRequestError([f"body: must be a JSON object, got {type(body).__name__}"])
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise InvalidRequestError(describe_validation_error(errors, what=what)) from None
