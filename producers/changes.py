"""The one way a user changes: apply field changes, validate through the contract, say what changed.

Every update dialect translates its request into ``{camelCase field: new value}`` and calls
:func:`apply_changes`; none of them validates the canonical user on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from reseller_webhooks.producers.events import validate_user
from reseller_webhooks.producers.user import ResellerUser, format_timestamp

#: Fields the contract derives: ``name`` follows first and last name unless set explicitly.
NAME_PARTS = frozenset({"firstName", "lastName"})


def display_name(first: str | None, last: str | None) -> str:
    return " ".join(p for p in (first, last) if p)


def apply_changes(
    current: ResellerUser, changes: Mapping[str, Any], *, now: datetime | None = None
) -> tuple[ResellerUser, frozenset[str]]:
    """The user after ``changes`` and the camelCase names of the fields whose value changed.

    Values are in wire form (what the webhook carries). Changes are compared after validation,
    so a value the contract normalises to the current one (an email's domain case) is no change.
    Nothing changed: the same user and an empty set (``updatedAt`` untouched). Otherwise
    ``updatedAt`` becomes ``now``; an invalid result raises
    :class:`~reseller_webhooks.producers.errors.InvalidEventError` naming the field and the rule.
    """
    before = current.to_wire()
    after = {**before, **changes}
    if NAME_PARTS & set(changes) and "name" not in changes:
        after["name"] = display_name(after.get("firstName"), after.get("lastName"))
    after["updatedAt"] = format_timestamp(now or datetime.now(UTC))
    updated = validate_user(after)
    wire = updated.to_wire()
    changed = frozenset(k for k, v in wire.items() if k != "updatedAt" and v != before[k])
    if not changed:
        return current, frozenset()
    return updated, changed
