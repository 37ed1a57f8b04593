"""The event contract: what is accepted at publish time, what is refused and how it is said."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reseller_webhooks.producers.errors import InvalidEventError, ProducerError, UnavailableError
from reseller_webhooks.producers.events import (
    DEFAULT_MAX_BODY_BYTES,
    EventType,
    build_event,
    new_event_id,
)
from reseller_webhooks.producers.publisher import validate_batch
from reseller_webhooks.worker.devserver.samples import sample_user


def refused(event: str, data: Any) -> list[str]:
    with pytest.raises(InvalidEventError) as err:
        build_event(event, data)
    return err.value.problems


def test_body_is_exactly_event_data_triggered_at() -> None:
    user = sample_user()
    event = build_event("reseller.user.created", user)
    body = json.loads(event.body())
    assert list(body) == ["event", "data", "triggeredAt"]
    assert body["event"] == "reseller.user.created"
    assert body["data"] == user
    assert event.body() == event.body()  # the same bytes every time they are signed


def test_event_ids_are_unique_and_dot_free() -> None:
    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("msg_") and "." not in i and len(i) == 28 for i in ids)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"password": "hunter2hunter2"},
            "data.password: not allowed: a password never leaves the producer",
        ),
        (
            {"favouriteColour": "blue"},
            "data.favouriteColour: unknown field, not part of the reseller user contract",
        ),
        (
            {"email": "ada.example.com"},
            "data.email: value is not a valid email address: An email address must have an @-sign.",
        ),
        ({"firstName": ""}, "data.firstName: String should have at least 1 character"),
        ({"firstName": "x" * 257}, "data.firstName: String should have at most 256 characters"),
        ({"lastName": "x" * 257}, "data.lastName: String should have at most 256 characters"),
        ({"role": ""}, "data.role: String should have at least 1 character"),
        ({"role": "r" * 257}, "data.role: String should have at most 256 characters"),
        ({"company": "c" * 257}, "data.company: String should have at most 256 characters"),
        (
            {"organizationId": "o" * 257},
            "data.organizationId: String should have at most 256 characters",
        ),
        ({"twoFactorEnabled": "yes"}, "data.twoFactorEnabled: Input should be a valid boolean"),
        ({"googleSsoEnabled": 1}, "data.googleSsoEnabled: Input should be a valid boolean"),
        ({"id": 42}, "data.id: Input should be a valid string"),
        ({"createdAt": 1700000000}, "data.createdAt: must be an RFC 3339 timestamp string"),
        (
            {"createdAt": "2019-08-24T14:15:22"},
            "data.createdAt: timestamp must carry a UTC offset (e.g. 2019-08-24T14:15:22Z)",
        ),
        (
            {"createdAt": "yesterday"},
            "data.createdAt: Input should be a valid datetime or date, input is too short",
        ),
    ],
)
def test_bad_user_fields_are_refused_naming_field_and_rule(
    change: dict[str, Any], problem: str
) -> None:
    assert refused("reseller.user.created", {**sample_user(), **change}) == [problem]


def test_bounds_accept_their_edges() -> None:
    edge = {
        **sample_user(),
        "firstName": "x",
        "lastName": "",
        "role": "r" * 256,
        "company": "",
        "organizationId": "o" * 256,
    }
    assert build_event("reseller.user.updated", edge).data.role == "r" * 256


def test_nested_organization_is_validated() -> None:
    user = sample_user()
    user["organization"]["allowedUsers"] = -1
    user["organization"]["address"]["zip"] = "x"
    assert refused("reseller.user.updated", user) == [
        "data.organization.allowedUsers: Input should be greater than or equal to 0",
        "data.organization.address.zip: unknown field, not part of the reseller user contract",
    ]


def test_missing_required_fields() -> None:
    user = sample_user()
    del user["email"], user["firstName"]
    assert refused("reseller.user.created", user) == [
        "data.firstName: Field required",
        "data.email: Field required",
    ]


def test_unknown_event_type_and_bad_data_are_reported_together() -> None:
    assert refused("reseller.user.deleted", "not an object") == [
        "event: unknown event type 'reseller.user.deleted'; expected one of "
        "reseller.user.created, reseller.user.updated",
        "data: must be a JSON object, got str",
    ]


def test_event_types_are_the_seeds() -> None:
    assert [e.value for e in EventType] == ["reseller.user.created", "reseller.user.updated"]


def test_timestamps_are_normalised_to_utc_z() -> None:
    user = {**sample_user(), "updatedAt": "2026-11-22T10:15:22+02:00"}
    body = json.loads(build_event("reseller.user.updated", user).body())
    assert body["data"]["updatedAt"] == "2026-11-22T08:15:22Z"


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("2026-11-22T10:15:22+02:00", "2026-11-22T08:15:22Z"),
        ("2026-11-22T08:15:22.5Z", "2026-11-22T08:15:22.500Z"),
        ("2026-11-22T08:15:22.123456Z", "2026-11-22T08:15:22.123Z"),
        ("0009-01-02T03:04:05Z", "0009-01-02T03:04:05Z"),  # four-digit year, as RFC 3339 says
    ],
)
def test_timestamp_wire_format(given: str, sent: str) -> None:
    body = json.loads(
        build_event("reseller.user.updated", {**sample_user(), "updatedAt": given}).body()
    )
    assert body["data"]["updatedAt"] == sent


def test_producers_stay_light() -> None:
    """An API service importing producers (dialects included) pulls in no HTTP client, no worker."""
    import subprocess
    import sys

    code = (
        "import sys, reseller_webhooks.producers as p; "
        "from reseller_webhooks.producers.dialects import graphql, json_patch, rest_create; "
        "from reseller_webhooks.producers.dialects import rest_update; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'httpx', 'flower', 'worker'}"
        " or m.startswith('reseller_webhooks.worker')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "given",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:59:59+01:00"],
)
def test_timestamps_outside_utc_range_are_refused(given: str) -> None:
    assert refused("reseller.user.updated", {**sample_user(), "updatedAt": given}) == [
        "data.updatedAt: timestamp is out of range once converted to UTC"
    ]


def test_oversized_event_refused_with_size_and_limit() -> None:
    user = sample_user()
    user["organization"]["description"] = "d" * (10 * 1024 * 1024)
    [problem] = refused("reseller.user.created", user)
    size = int(problem.split(" would be ")[1].split(" bytes")[0])
    assert size > 10 * 1024 * 1024
    assert problem == (
        f"data: the event body would be {size} bytes, over the limit of {DEFAULT_MAX_BODY_BYTES}"
        " bytes (WEBHOOKS_MAX_BODY_BYTES)"
    )


def test_body_limit_is_inclusive_and_configurable() -> None:
    event = build_event("reseller.user.created", sample_user())
    size = len(event.body())
    exact = build_event(
        "reseller.user.created",
        sample_user(),
        triggered_at=event.triggered_at,
        max_body_bytes=size,
    )
    assert exact.body() == event.body()
    with pytest.raises(InvalidEventError, match=f"over the limit of {size - 1} bytes"):
        build_event(
            "reseller.user.created",
            sample_user(),
            triggered_at=event.triggered_at,
            max_body_bytes=size - 1,
        )


def test_deeply_nested_data_is_a_contract_problem() -> None:
    deep: Any = {}
    for _ in range(100_000):
        deep = {"x": deep}
    user = {**sample_user(), "organization": {**sample_user()["organization"], "address": deep}}
    assert refused("reseller.user.created", user) == [
        "data.organization.address.x: unknown field, not part of the reseller user contract"
    ]


@pytest.mark.parametrize(
    ("items", "problems"),
    [
        (["abc"], ["[0]: must be an object {event, data}"]),
        (
            [5, None],
            ["[0]: must be an object {event, data}", "[1]: must be an object {event, data}"],
        ),
        ([("reseller.user.created",)], ["[0]: must be an object {event, data}"]),
        ("abc", ["batch: must be a list of {event, data} objects"]),
        ({"event": "reseller.user.created"}, ["batch: must be a list of {event, data} objects"]),
        (5, ["batch: must be a list of {event, data} objects"]),
    ],
)
def test_batch_items_that_are_not_objects(items: Any, problems: list[str]) -> None:
    with pytest.raises(InvalidEventError) as err:
        validate_batch(items)
    assert err.value.problems == problems


def test_unavailable_is_a_503_naming_redis_only() -> None:
    error = UnavailableError.from_exception(ConnectionRefusedError("redis://:pw@h:1 refused"))
    assert isinstance(error, ProducerError)
    assert error.status == 503
    assert str(error) == "Redis is unavailable (ConnectionRefusedError)"
    assert error.to_dict()["error"] == 503
