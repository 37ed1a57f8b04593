"""Refusals as RFC 9457 problem details (``application/problem+json``).

Each names the field and the rule: ``errors`` lists ``{field, rule}`` pairs, taken from the
``"<field>: <rule>"`` lines the publisher's validation writes (the contract's own texts), so an
HTTP producer reads the same words a Python one gets in ``InvalidEventError.problems``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reseller_webhooks.producers.errors import (
    IdempotencyKeyReusedError,
    InvalidEventError,
    NotReplicatedError,
    StoreResetError,
    UnavailableError,
    WebhooksError,
)

MEDIA_TYPE = "application/problem+json"
#: The request header a reused key is named by.
HEADER = "Idempotency-Key"
#: Seconds a client is asked to wait after a 503.
RETRY_AFTER_S = 1

#: problem name -> (status, title)
KINDS: dict[str, tuple[int, str]] = {
    "invalid-json": (400, "The request body is not valid JSON"),
    "invalid-header": (400, "A request header breaks its rule"),
    "unauthorized": (401, "A valid producer token is required"),
    "not-found": (404, "No such resource"),
    "method-not-allowed": (405, "Method not allowed on this resource"),
    "too-large": (413, "The request body is over the size limit"),
    "invalid-event": (422, "The event breaks the contract"),
    "idempotency-key-reused": (422, "The Idempotency-Key was used for a different event"),
    "unavailable": (503, "Redis is unavailable; nothing was recorded"),
    "not-replicated": (503, "Recorded, but not confirmed by enough Redis replicas"),
    "store-reset": (503, "Redis came back empty or behind; nothing is recorded until accepted"),
    "internal": (500, "The request could not be carried out"),
}


@dataclass(frozen=True)
class Problem:
    kind: str
    detail: str
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def status(self) -> int:
        return KINDS[self.kind][0]

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:reseller-webhooks:problem:{self.kind}",
            "title": KINDS[self.kind][1],
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


def field_rule(line: str) -> dict[str, str]:
    """``"data.email: <rule>"`` -> ``{"field": "data.email", "rule": "<rule>"}``."""
    where, sep, rule = line.partition(": ")
    return {"field": where, "rule": rule} if sep else {"field": "body", "rule": line}


def problem(kind: str, *lines: str) -> Problem:
    """A problem whose detail joins ``lines`` and whose errors are their field and rule."""
    return Problem(kind, "; ".join(lines), [field_rule(line) for line in lines])


def from_error(exc: WebhooksError) -> Problem:
    """The problem a publishing error becomes (the status each error class documents)."""
    if isinstance(exc, InvalidEventError):
        return problem("invalid-event", *exc.problems)
    if isinstance(exc, UnavailableError):
        return Problem(
            "unavailable", f"{exc}: publish again with the same Idempotency-Key to be sure"
        )
    if isinstance(exc, NotReplicatedError):
        return Problem("not-replicated", str(exc))
    if isinstance(exc, StoreResetError):
        return Problem("store-reset", str(exc))
    if isinstance(exc, IdempotencyKeyReusedError):
        rule = field_rule(str(exc))["rule"]
        return Problem("idempotency-key-reused", str(exc), [{"field": HEADER, "rule": rule}])
    return Problem("internal", type(exc).__name__)
