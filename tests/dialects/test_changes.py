from __future__ import annotations

from datetime import UTC, datetime

import pytest

from producers.changes import apply_changes
from producers.errors import InvalidEventError
from producers.user import ResellerUser

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


def test_no_change_returns_the_same_user(user: ResellerUser) -> None:
    same, changed = apply_changes(user, {"firstName": user.first_name}, now=NOW)
    assert same is user
    assert changed == frozenset()


def test_changed_fields_and_updated_at(user: ResellerUser) -> None:
    new, changed = apply_changes(user, {"email": "countess@example.com"}, now=NOW)
    assert changed == {"email"}
    assert new.email == "countess@example.com"
    assert new.updated_at == NOW
    assert new.created_at == user.created_at


def test_name_follows_first_and_last_name_unless_set(user: ResellerUser) -> None:
    new, changed = apply_changes(user, {"firstName": "Augusta"}, now=NOW)
    assert new.name == "Augusta Lovelace"
    assert changed == {"firstName", "name"}
    new, _ = apply_changes(user, {"firstName": "Augusta", "name": "A. Ada"}, now=NOW)
    assert new.name == "A. Ada"


def test_invalid_result_is_refused_by_the_contract(user: ResellerUser) -> None:
    with pytest.raises(InvalidEventError) as err:
        apply_changes(user, {"email": "nope", "role": ""}, now=NOW)
    assert err.value.problems == [
        "data.email: value is not a valid email address: An email address must have an @-sign.",
        "data.role: String should have at least 1 character",
    ]
