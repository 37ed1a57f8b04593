"""The ``Idempotency-Key`` header: the same meaning as ``publish(..., idempotency_key=)``.

A batch under one key gives each of its events a key of its own derived from it, so that the
same batch sent again answers the first ids and records nothing.
"""

from __future__ import annotations

import hashlib

from reseller_webhooks.producers.publisher import IDEMPOTENCY_KEY

HEADER = "Idempotency-Key"


def header_problem(values: list[str]) -> str | None:
    """Why the header's values are refused (``"<field>: <rule>"``), or None."""
    if len(values) > 1:
        return f"{HEADER}: give it once"
    if values and not IDEMPOTENCY_KEY.match(values[0]):
        return f"{HEADER}: must be 1 to 200 printable ASCII characters without spaces"
    return None


def batch_keys(key: str, count: int) -> list[str]:
    """One key per event of a batch sent under ``key`` (within the publisher's key rule)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return [f"batch:{digest}:{index}" for index in range(count)]
