"""Errors of the API dialects: each carries the HTTP status and the message its seed documents,
so an API service can answer with ``exc.status`` and ``exc.to_dict()`` as they are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reseller_webhooks.producers.errors import ProducerError
from reseller_webhooks.producers.user import ResellerUser


class DialectError(ProducerError):
    """An API dialect refused its request; nothing was published."""


class InvalidRequestError(DialectError):
    """The request body breaks the dialect's constraints; ``problems`` name field and rule."""

    status = 400

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid request: " + "; ".join(self.problems))


class InvalidValueError(DialectError):
    """A path identifier is not in the right format (JSON Patch seed, Bad Request 1 and 2)."""

    status = 400

    def __init__(self, value: str) -> None:
        super().__init__(f"The value '{value}' is not valid.")


class PathNotFoundError(DialectError):
    """A JSON Patch path names a property that does not exist (JSON Patch seed, Bad Request 3)."""

    status = 400

    def __init__(self, segment: str) -> None:
        self.segment = segment
        super().__init__(
            f"The target location specified by path segment '{segment}' was not found."
        )


class PatchTestFailedError(DialectError):
    """A JSON Patch ``test`` operation did not hold; the whole patch is refused (RFC 6902 5)."""

    status = 409

    def __init__(self, path: str) -> None:
        super().__init__(f"The test operation at path '{path}' failed.")


class NotFoundError(DialectError):
    """No such account or user (JSON Patch seed, Not Found)."""

    status = 404

    def __init__(self) -> None:
        super().__init__("Not Found")


def require_user(current: ResellerUser | None) -> ResellerUser:
    """The user the API service loaded; :class:`NotFoundError` (404) when it found none."""
    if current is None:
        raise NotFoundError()
    return current


class GraphQLRequestError(DialectError):
    """The GraphQL document or its variables were refused (400), or its user is unknown (404);
    ``errors`` in GraphQL's format."""

    status = 400

    def __init__(self, errors: Sequence[dict[str, Any]], *, status: int | None = None) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e.get("message")) for e in self.errors), status=status)

    def to_dict(self) -> dict[str, object]:
        return {"errors": self.errors}
