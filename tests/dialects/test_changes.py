from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given

from reseller_webhooks.producers.changes import apply_changes
from reseller_webhooks.producers.errors import InvalidEventError
from reseller_webhooks.producers.user import ResellerUser
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.dialects.strategies import update_requests

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


def test_a_value_the_contract_normalises_to_the_current_one_is_no_change(
    user: ResellerUser,
) -> None:
    # The email's domain part is case-insensitive and stored in lower case.
    same, changed = apply_changes(user, {"email": "ada@EXAMPLE.com"}, now=NOW)
    assert (same, changed) == (user, frozenset())


def test_a_password_never_enters_the_user(user: ResellerUser) -> None:
    with pytest.raises(InvalidEventError) as err:
        apply_changes(user, {"password": "hunter2hunter2"}, now=NOW)
    assert err.value.problems == [
        "data.password: not allowed: a password never leaves the producer"
    ]
    assert "hunter2" not in str(err.value)


@given(update_requests())
def test_changed_is_exactly_the_fields_that_differ(body: dict[str, Any]) -> None:
    current = ResellerUser.model_validate(sample_user())
    changes = {k: v for k, v in body.items() if k != "allowCustomerPortalAccess"}
    new, changed = apply_changes(current, changes, now=NOW)
    before, after = current.to_wire(), new.to_wire()
    assert changed == {k for k in after if k != "updatedAt" and after[k] != before[k]}
    assert new.updated_at == (NOW if changed else current.updated_at)
