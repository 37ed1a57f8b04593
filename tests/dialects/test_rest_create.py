"""REST create: every constraint of seed 001, both sides of each bound; the password stays put."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given

from reseller_webhooks.producers.dialects import rest_create
from reseller_webhooks.producers.dialects.errors import InvalidRequestError
from reseller_webhooks.producers.errors import InvalidEventError
from tests.dialects.helpers import RecordingPublisher
from tests.dialects.strategies import create_requests, create_requests_with_one_bad_field
from tests.helpers import SEED_EXAMPLE, shape

SEED_REQUEST = {
    "firstName": "string",
    "lastName": "string",
    "email": "user@example.com",
    "role": "string",
    "company": "string",
    "organizationId": "string",
    "allowCustomerPortalAccess": True,
    "password": "stringst",
}


def problems(body: Any) -> list[str]:
    with pytest.raises(InvalidRequestError) as err:
        rest_create.parse_request(body)
    assert err.value.status == 400
    return err.value.problems


def test_the_seed_request_example_is_valid() -> None:
    request = rest_create.parse_request(SEED_REQUEST)
    assert request.first_name == "string"
    assert request.password.get_secret_value() == "stringst"


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("firstName", "", False),
        ("firstName", "x", True),
        ("firstName", "x" * 256, True),
        ("firstName", "x" * 257, False),
        ("lastName", "", True),
        ("lastName", "x" * 256, True),
        ("lastName", "x" * 257, False),
        ("role", "", False),
        ("role", "r", True),
        ("role", "r" * 256, True),
        ("role", "r" * 257, False),
        ("company", "", True),
        ("company", "c" * 256, True),
        ("company", "c" * 257, False),
        ("organizationId", "", True),
        ("organizationId", "o" * 256, True),
        ("organizationId", "o" * 257, False),
        ("password", "x" * 7, False),
        ("password", "x" * 8, True),
        ("password", "x" * 256, True),
        ("password", "x" * 257, False),
        ("email", "a@b.io", True),
        ("email", "", False),
        ("email", "ada.example.com", False),
        ("allowCustomerPortalAccess", False, True),
        ("allowCustomerPortalAccess", "true", False),
    ],
)
def test_each_bound(field: str, value: Any, ok: bool) -> None:
    body = {**SEED_REQUEST, field: value}
    if ok:
        rest_create.parse_request(body)
    else:
        assert [p.split(":")[0] for p in problems(body)] == [field]


@pytest.mark.parametrize(
    "field", ["firstName", "email", "role", "allowCustomerPortalAccess", "password"]
)
def test_required_fields(field: str) -> None:
    body = {k: v for k, v in SEED_REQUEST.items() if k != field}
    assert problems(body) == [f"{field}: Field required"]


def test_optional_fields_may_be_left_out() -> None:
    body = {
        k: v for k, v in SEED_REQUEST.items() if k not in {"lastName", "company", "organizationId"}
    }
    assert rest_create.parse_request(body).company is None


def test_unknown_fields_and_non_objects_are_refused() -> None:
    assert problems({**SEED_REQUEST, "isAdmin": True}) == [
        "isAdmin: unknown field, not part of the create request schema"
    ]
    assert problems(["not", "an", "object"]) == ["body: must be a JSON object, got list"]


def test_the_password_never_shows() -> None:
    secret = "correct horse battery staple"
    request = rest_create.parse_request({**SEED_REQUEST, "password": secret})
    assert secret not in repr(request)
    assert secret not in str(request)
    assert secret not in request.model_dump_json()
    too_long = "p" * 300
    assert too_long not in str(problems({**SEED_REQUEST, "password": too_long}))


@given(create_requests())
def test_every_valid_request_parses(body: dict[str, Any]) -> None:
    rest_create.parse_request(body)


@given(create_requests_with_one_bad_field())
def test_every_request_with_a_bad_field_is_refused_naming_it(
    case: tuple[str, dict[str, Any]],
) -> None:
    field, body = case
    assert [p.split(":")[0] for p in problems(body)] == [field]


def seed_201() -> dict[str, Any]:
    """The seed's 201 example, with its placeholder emails made real."""
    created = json.loads(json.dumps(SEED_EXAMPLE["data"]))
    created["email"] = "user@example.com"
    created["organization"]["email"] = "org@example.com"
    return dict(created)


def test_the_201_response_becomes_reseller_user_created() -> None:
    event = rest_create.created_event(seed_201())
    body = json.loads(event.body())
    assert body["event"] == "reseller.user.created"
    assert shape(body) == shape(SEED_EXAMPLE)


def test_publish_created_publishes_the_created_user(recorder: RecordingPublisher) -> None:
    assert rest_create.publish_created(recorder, seed_201()) == "msg_1"
    assert recorder.calls[0][0] == "reseller.user.created"
    assert recorder.calls[0][1].email == "user@example.com"


def test_a_created_user_carrying_the_password_is_refused() -> None:
    with pytest.raises(InvalidEventError) as err:
        rest_create.created_event({**seed_201(), "password": "stringst"})
    assert err.value.status == 422
    assert err.value.problems == [
        "data.password: not allowed: a password never leaves the producer"
    ]
    assert "stringst" not in str(err.value)
