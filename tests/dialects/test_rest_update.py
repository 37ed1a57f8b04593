"""REST partial update (seed 000): only present fields change; null clears or is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given

from reseller_webhooks.producers.dialects import rest_update
from reseller_webhooks.producers.dialects.errors import InvalidRequestError, NotFoundError
from reseller_webhooks.producers.user import ResellerUser
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.dialects.helpers import RecordingPublisher
from tests.dialects.strategies import update_requests, update_requests_with_one_bad_field

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SEED_REQUEST = {
    "firstName": "string",
    "lastName": "string",
    "email": "user@example.com",
    "role": "string",
    "company": "string",
    "organizationId": "string",
    "allowCustomerPortalAccess": True,
}


def update(user: ResellerUser, body: Any, **kw: Any) -> tuple[ResellerUser, frozenset[str]]:
    return rest_update.apply_update(user, rest_update.parse_request(body), now=NOW, **kw)


def test_the_seed_example_changes_what_it_names(user: ResellerUser) -> None:
    new, changed = update(user, SEED_REQUEST)
    assert changed == {
        "firstName",
        "lastName",
        "name",
        "email",
        "role",
        "company",
        "organizationId",
        "organization",
        "updatedAt",
    } - {"updatedAt"}
    assert (new.first_name, new.email, new.role) == ("string", "user@example.com", "string")
    assert new.name == "string string"
    assert new.updated_at == NOW


def test_absent_fields_are_left_unchanged(user: ResellerUser) -> None:
    new, changed = update(user, {"company": "Babbage & Co"})
    assert changed == {"company"}
    assert new.model_dump(exclude={"company", "updated_at"}) == user.model_dump(
        exclude={"company", "updated_at"}
    )


def test_an_empty_body_changes_nothing(user: ResellerUser) -> None:
    assert update(user, {}) == (user, frozenset())


@pytest.mark.parametrize("field", ["lastName", "company", "organizationId"])
def test_null_clears_an_optional_field(user: ResellerUser, field: str) -> None:
    new, changed = update(user, {field: None})
    assert field in changed
    assert new.to_wire()[field] is None


@pytest.mark.parametrize("field", ["firstName", "email", "role", "allowCustomerPortalAccess"])
def test_null_is_refused_where_a_user_needs_a_value(user: ResellerUser, field: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        rest_update.parse_request({field: None})
    assert err.value.problems == [f"{field}: may not be null; leave it out to keep it unchanged"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("firstName", ""),
        ("firstName", "x" * 257),
        ("lastName", "x" * 257),
        ("role", ""),
        ("role", "r" * 257),
        ("company", "c" * 257),
        ("organizationId", "o" * 257),
        ("email", "nope"),
        ("allowCustomerPortalAccess", "yes"),
        ("password", "longenough"),
    ],
)
def test_bounds_and_unknown_fields(field: str, value: Any) -> None:
    with pytest.raises(InvalidRequestError) as err:
        rest_update.parse_request({field: value})
    assert [p.split(":")[0] for p in err.value.problems] == [field]


def test_organization_follows_organization_id(user: ResellerUser) -> None:
    new, _ = update(user, {"organizationId": "org_new"})
    assert new.organization is None  # not left describing the old organization
    assert user.organization is not None
    org = user.organization.model_copy(update={"id": "org_new"})
    new, _ = update(user, {"organizationId": "org_new"}, organization=org)
    assert new.organization is not None
    assert new.organization.id == "org_new"


def test_nothing_changed_publishes_nothing_unless_asked(
    user: ResellerUser, recorder: RecordingPublisher
) -> None:
    body = {"allowCustomerPortalAccess": False, "firstName": user.first_name}
    assert rest_update.publish_update(recorder, user, body) is None
    assert recorder.calls == []
    event_id = rest_update.publish_update(recorder, user, body, publish_unchanged=True)
    assert event_id == "msg_1"
    assert rest_update.publish_update(recorder, user, {"role": "support"}) == "msg_2"
    assert [c[1].role for c in recorder.calls] == [user.role, "support"]


def test_no_current_user_is_not_found(recorder: RecordingPublisher) -> None:
    with pytest.raises(NotFoundError) as err:
        rest_update.publish_update(recorder, None, {"role": "support"})
    assert (err.value.status, err.value.message) == (404, "Not Found")
    assert recorder.calls == []


@given(update_requests())
def test_any_valid_partial_update_applies(body: dict[str, Any]) -> None:
    current = ResellerUser.model_validate(sample_user())
    new, changed = update(current, body)
    for field, value in body.items():
        if field != "allowCustomerPortalAccess":
            assert new.to_wire()[field] == value
    assert changed <= set(body) | {"name", "organization"}


@given(update_requests_with_one_bad_field())
def test_any_update_with_a_bad_field_is_refused_naming_it(case: tuple[str, dict[str, Any]]) -> None:
    field, body = case
    with pytest.raises(InvalidRequestError) as err:
        rest_update.parse_request(body)
    assert err.value.status == 400
    assert [p.split(":")[0] for p in err.value.problems] == [field]


def test_the_seed_200_object_is_what_the_subscriber_receives(
    user: ResellerUser, recorder: RecordingPublisher
) -> None:
    rest_update.publish_update(recorder, user, {"company": "Navy"})
    sent = recorder.calls[0][1].to_wire()
    assert list(sent) == [
        "id",
        "createdAt",
        "updatedAt",
        "name",
        "firstName",
        "lastName",
        "email",
        "role",
        "twoFactorEnabled",
        "googleSsoEnabled",
        "lastLoginAt",
        "organizationId",
        "organization",
        "company",
    ]
