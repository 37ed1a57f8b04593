"""JSON Patch (seed 002): every RFC 6902 operation, the seed's errors with their exact texts."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reseller_webhooks.producers.dialects import json_patch
from reseller_webhooks.producers.dialects.errors import (
    DialectError,
    InvalidRequestError,
    InvalidValueError,
    NotFoundError,
    PatchTestFailedError,
    PathNotFoundError,
)
from reseller_webhooks.producers.user import ResellerUser
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.dialects.helpers import GUID, RecordingPublisher
from tests.dialects.strategies import PATCH_FIELDS


def patch(user: ResellerUser | None, ops: Any) -> tuple[ResellerUser, frozenset[str]]:
    return json_patch.patch_user(GUID, GUID, user, ops)


def refused(
    user: ResellerUser | None, ops: Any, tenant: str = GUID, uid: str = GUID
) -> DialectError:
    with pytest.raises(DialectError) as err:
        json_patch.patch_user(tenant, uid, user, ops)
    return err.value


def test_seed_example_1_replaces_the_display_name(user: ResellerUser) -> None:
    new, changed = patch(user, [{"op": "replace", "path": "/displayName", "value": "My New Name"}])
    assert new.name == "My New Name"
    assert changed == {"name"}


def test_the_view_maps_the_canonical_user(user: ResellerUser) -> None:
    assert json_patch.to_document(user) == {
        "displayName": "Ada Lovelace",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": "ada@example.com",
        "roles": ["admin", "billing"],
    }


def test_replace_on_roles_replaces_the_whole_set(user: ResellerUser) -> None:
    new, changed = patch(user, [{"op": "replace", "path": "/roles", "value": ["support"]}])
    assert new.role == "support"
    assert changed == {"role"}


@pytest.mark.parametrize(
    ("ops", "role"),
    [
        ([{"op": "add", "path": "/roles/-", "value": "support"}], "admin,billing,support"),
        ([{"op": "add", "path": "/roles/0", "value": "owner"}], "owner,admin,billing"),
        ([{"op": "remove", "path": "/roles/0"}], "billing"),
        ([{"op": "replace", "path": "/roles/1", "value": "audit"}], "admin,audit"),
        ([{"op": "move", "from": "/roles/0", "path": "/roles/-"}], "billing,admin"),
        ([{"op": "copy", "from": "/roles/0", "path": "/roles/-"}], "admin,billing"),  # dedup
        (
            [
                {"op": "test", "path": "/roles", "value": ["admin", "billing"]},
                {"op": "add", "path": "/roles/-", "value": "x"},
            ],
            "admin,billing,x",
        ),
    ],
)
def test_each_operation_on_roles(user: ResellerUser, ops: Any, role: str) -> None:
    assert patch(user, ops)[0].role == role


def test_each_operation_on_fields(user: ResellerUser) -> None:
    new, changed = patch(
        user,
        [
            {"op": "test", "path": "/email", "value": "ada@example.com"},
            {"op": "copy", "from": "/firstName", "path": "/displayName"},
            {"op": "remove", "path": "/lastName"},
            {"op": "add", "path": "/email", "value": "countess@example.com"},
        ],
    )
    assert (new.name, new.last_name, new.email) == ("Ada", None, "countess@example.com")
    assert changed == {"name", "lastName", "email"}
    new, _ = patch(user, [{"op": "move", "from": "/lastName", "path": "/displayName"}])
    assert (new.name, new.last_name) == ("Lovelace", None)


def test_an_empty_patch_changes_nothing(user: ResellerUser) -> None:
    assert patch(user, []) == (user, frozenset())


def test_a_removed_property_can_be_added_back(user: ResellerUser) -> None:
    ops = [
        {"op": "remove", "path": "/lastName"},
        {"op": "add", "path": "/lastName", "value": "Byron"},
    ]
    new, changed = patch(user, ops)
    assert (new.last_name, new.name) == ("Byron", "Ada Byron")
    assert changed == {"lastName", "name"}


def test_a_change_the_contract_normalises_away_is_no_change(user: ResellerUser) -> None:
    ops = [{"op": "replace", "path": "/email", "value": "ada@EXAMPLE.com"}]
    assert patch(user, ops) == (user, frozenset())


def test_from_is_only_read_by_move_and_copy(user: ResellerUser) -> None:
    ops = [{"op": "replace", "from": "/nowhere", "path": "/displayName", "value": "Ada L."}]
    assert patch(user, ops)[0].name == "Ada L."


def test_the_whole_document_may_be_replaced(user: ResellerUser) -> None:
    document = {**json_patch.to_document(user), "roles": ["owner"]}
    new, changed = patch(user, [{"op": "replace", "path": "", "value": document}])
    assert (new.role, changed) == ("owner", {"role"})
    err = refused(user, [{"op": "replace", "path": "", "value": {**document, "x": 1}}])
    assert isinstance(err, InvalidRequestError)
    assert err.problems == ["x: unknown field, not part of the user"]


@given(st.sampled_from(sorted(PATCH_FIELDS)), st.data())
def test_any_valid_value_replaces(field: str, data: st.DataObject) -> None:
    current = ResellerUser.model_validate(sample_user())
    value = data.draw(PATCH_FIELDS[field][0])
    new, _ = patch(current, [{"op": "replace", "path": f"/{field}", "value": value}])
    expected = list(dict.fromkeys(value)) if field == "roles" else value  # duplicates dropped
    assert json_patch.to_document(new)[field] == expected


@given(st.sampled_from(sorted(PATCH_FIELDS)), st.data())
def test_any_invalid_value_is_refused_naming_the_property(field: str, data: st.DataObject) -> None:
    current = ResellerUser.model_validate(sample_user())
    value = data.draw(PATCH_FIELDS[field][1])
    err = refused(current, [{"op": "replace", "path": f"/{field}", "value": value}])
    assert isinstance(err, InvalidRequestError)
    assert {p.split(":")[0].split(".")[0] for p in err.problems} == {field}


def test_a_failed_test_refuses_the_whole_patch(user: ResellerUser) -> None:
    err = refused(
        user,
        [
            {"op": "replace", "path": "/displayName", "value": "X"},
            {"op": "test", "path": "/email", "value": "someone@else.com"},
        ],
    )
    assert isinstance(err, PatchTestFailedError)
    assert (err.status, err.message) == (409, "The test operation at path '/email' failed.")


@pytest.mark.parametrize(
    ("ops", "segment"),
    [
        ([{"op": "replace", "path": "/favouriteColour", "value": "red"}], "favouriteColour"),
        ([{"op": "add", "path": "/password", "value": "hunter2hunter2"}], "password"),
        ([{"op": "remove", "path": "/roles/9"}], "9"),
        ([{"op": "replace", "path": "/displayName/first", "value": "x"}], "first"),
        ([{"op": "move", "from": "/nickname", "path": "/displayName"}], "nickname"),
        ([{"op": "copy", "from": "/roles/5", "path": "/roles/-"}], "5"),
        ([{"op": "add", "path": "/roles/3", "value": "x"}], "3"),
        ([{"op": "move", "from": "/firstName", "path": "/roles/7"}], "7"),
        ([{"op": "test", "path": "/nickname", "value": "x"}], "nickname"),
        ([{"op": "replace", "path": "/a~1b", "value": "x"}], "a/b"),
    ],
)
def test_paths_to_missing_properties(user: ResellerUser, ops: Any, segment: str) -> None:
    err = refused(user, ops)
    assert isinstance(err, PathNotFoundError)
    assert err.status == 400
    assert err.message == (
        f"The target location specified by path segment '{segment}' was not found."
    )


def test_invalid_tenant_and_user_ids(user: ResellerUser) -> None:
    err = refused(user, [], tenant="not-a-tenant")
    assert isinstance(err, InvalidValueError)
    assert (err.status, err.message) == (400, "The value 'not-a-tenant' is not valid.")
    err = refused(user, [], uid="42")
    assert (err.status, err.message) == (400, "The value '42' is not valid.")
    for bad in (f"{{{GUID}}}", f"{GUID}\n", GUID[:-1], f" {GUID}"):
        assert isinstance(refused(user, [], uid=bad), InvalidValueError)
    patch(user, [])  # upper and lower case hex are both GUIDs
    json_patch.patch_user(GUID.upper(), GUID, user, [])


def test_ids_are_checked_before_the_user_is_looked_up() -> None:
    assert isinstance(refused(None, [], tenant="x"), InvalidValueError)


def test_not_found(user: ResellerUser) -> None:
    err = refused(None, [])
    assert isinstance(err, NotFoundError)
    assert (err.status, err.message) == (404, "Not Found")


def test_error_bodies_have_the_seed_shape(user: ResellerUser) -> None:
    body = refused(user, [{"op": "replace", "path": "/x", "value": 1}]).to_dict()
    assert list(body) == ["error", "message", "status", "timestamp"]
    assert body["error"] == 400
    assert body["status"] == "error"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", str(body["timestamp"]))


@pytest.mark.parametrize(
    ("ops", "problem"),
    [
        ({"op": "replace"}, "body: must be a JSON array of patch operations"),
        ([{"op": "frobnicate", "path": "/email"}], "body: not a valid JSON Patch"),
        ([{"path": "/email", "value": 1}], "body: not a valid JSON Patch"),
        ([{"op": "replace", "path": "/roles", "value": []}], "roles: List should have at least 1"),
        ([{"op": "replace", "path": "/roles", "value": ["a,b"]}], "roles.0: a role has no commas"),
        ([{"op": "add", "path": "/roles/-", "value": " x"}], "roles.2: a role has no commas"),
        ([{"op": "replace", "path": "/roles", "value": ["r" * 200, "s" * 200]}], "role: String"),
        ([{"op": "replace", "path": "/email"}], "body[0]: not a valid JSON Patch operation"),
        ([{"op": "test", "path": "/email"}], "body[0]: not a valid JSON Patch operation"),
        ([{"op": "move", "path": "/displayName"}], "body[0]: not a valid JSON Patch operation"),
        (
            [{"op": "copy", "from": 5, "path": "/displayName"}],
            "body[0]: not a valid JSON Patch operation",
        ),
        ([{"op": "replace", "path": "email", "value": "a@b.io"}], "body: not a valid JSON Patch"),
        (["replace"], "body: not a valid JSON Patch"),
        (
            [{"op": "move", "from": "/roles", "path": "/roles/0"}],
            "body[0]: not a valid JSON Patch operation: Cannot move values into their own",
        ),
        ([{"op": "remove", "path": ""}], "body[0]: not a valid JSON Patch operation"),
        ([{"op": "replace", "path": "/roles/-", "value": "x"}], "body[0]: not a valid JSON"),
        ([{"op": "remove", "path": "/email"}], "email: Field required"),
        ([{"op": "replace", "path": "/email", "value": "nope"}], "email: value is not a valid"),
        ([{"op": "replace", "path": "/displayName", "value": 7}], "displayName: Input should be"),
    ],
)
def test_malformed_patches_and_invalid_results(user: ResellerUser, ops: Any, problem: str) -> None:
    err = refused(user, ops)
    assert isinstance(err, InvalidRequestError)
    assert err.status == 400
    assert err.problems[0].startswith(problem)


def test_success_response_shape() -> None:
    body = json_patch.success_response()
    assert list(body) == ["status", "timestamp"]
    assert body["status"] == "success"


def test_publish_patch(user: ResellerUser, recorder: RecordingPublisher) -> None:
    ops = [{"op": "replace", "path": "/displayName", "value": "My New Name"}]
    assert json_patch.publish_patch(recorder, GUID, GUID, user, ops) == "msg_1"
    assert recorder.calls[0][1].name == "My New Name"
    noop = [{"op": "test", "path": "/firstName", "value": "Ada"}]
    assert json_patch.publish_patch(recorder, GUID, GUID, user, noop) is None
    assert json_patch.publish_patch(recorder, GUID, GUID, user, noop, publish_unchanged=True)
    with pytest.raises(NotFoundError):
        json_patch.publish_patch(recorder, GUID, GUID, None, ops)
    assert len(recorder.calls) == 2
