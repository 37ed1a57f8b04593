"""GraphQL (seed 003): real parsing and validation by graphql-core; constraints; the response."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given

from reseller_webhooks.producers.dialects import graphql
from reseller_webhooks.producers.dialects.errors import GraphQLRequestError
from reseller_webhooks.producers.user import ResellerUser
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.dialects.helpers import SEED_MUTATION, SEED_VARIABLES, RecordingPublisher
from tests.dialects.strategies import (
    NON_ASCII_DATE,
    reseller_user_edits,
    reseller_user_edits_with_one_bad_field,
)

RESPONSE_FIELDS = [
    "id",
    "email",
    "username",
    "resellerId",
    "role",
    "enabled",
    "radAccess",
    "radAccessClear",
    "createdAt",
    "updatedAt",
]


def variables(**edit: Any) -> dict[str, Any]:
    out = copy.deepcopy(SEED_VARIABLES)
    out["resellerUserEdit"].update(edit)
    return out


def refused(query: str, variables: Any = None) -> GraphQLRequestError:
    with pytest.raises(GraphQLRequestError) as err:
        graphql.parse_edit(query, variables)
    assert err.value.status == 400
    return err.value


def test_the_seed_example_parses_and_maps(user: ResellerUser) -> None:
    request = graphql.parse_edit(SEED_MUTATION, SEED_VARIABLES)
    assert request.id == 0
    assert request.password is not None
    assert (request.group_id, request.multi_login_count) == (0, 0)
    new, changed = graphql.apply_edit(user, request)
    assert changed == {"firstName", "lastName", "name"}
    assert (new.first_name, new.last_name, new.name) == (
        "<First_Name>",
        "<Last_Name>",
        "<First_Name> <Last_Name>",
    )
    # What has no place in the payload is dropped, not smuggled in.
    assert "Phone_Number" not in new.model_dump_json()
    assert "User_Password" not in new.model_dump_json()


def test_the_response_has_the_seed_shape(user: ResellerUser) -> None:
    account = {
        "username": "ada",
        "resellerId": "7",
        "enabled": True,
        "radAccess": False,
        "radAccessClear": "x",
    }
    response = graphql.edit_response(SEED_MUTATION, SEED_VARIABLES, user, account)
    result = response["data"]["resellerEditUser"]
    assert list(result) == RESPONSE_FIELDS
    assert (result["id"], result["email"], result["username"]) == (user.id, user.email, "ada")
    assert result["createdAt"] == "2026-11-22T09:15:22Z"
    narrow = "mutation { resellerEditUser(id: 1) { id role } }"
    assert graphql.edit_response(narrow, None, user) == {
        "data": {"resellerEditUser": {"id": user.id, "role": user.role}}
    }


def test_profile_fields_other_than_names_change_nothing(user: ResellerUser) -> None:
    request = graphql.parse_edit(
        SEED_MUTATION,
        {
            "id": 3,
            "resellerUserEdit": {
                "groupId": 9,
                "userProfileEdit": {"city": "Paris", "phone": "+33 1 23"},
            },
        },
    )
    assert graphql.apply_edit(user, request) == (user, frozenset())


def test_null_last_name_clears_and_null_first_name_is_refused(user: ResellerUser) -> None:
    request = graphql.parse_edit(
        SEED_MUTATION, {"id": 1, "resellerUserEdit": {"userProfileEdit": {"lastName": None}}}
    )
    assert graphql.apply_edit(user, request)[0].last_name is None
    err = refused(
        SEED_MUTATION, {"id": 1, "resellerUserEdit": {"userProfileEdit": {"firstName": None}}}
    )
    assert "userProfileEdit.firstName: may not be null" in err.message


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("mutation { resellerEditUser(id: 1) { id ", "Syntax Error"),
        ("mutation { resellerEditUser(id: 1) { nope } }", "Cannot query field 'nope'"),
        ('mutation { resellerEditUser(id: "1") { id } }', "Int cannot represent"),
        ("mutation { resellerEditUser { id } }", "of type 'Int!' is required"),
        ("mutation { resellerEditUser(id: 1, colour: 2) { id } }", "Unknown argument 'colour'"),
        ("mutation { deleteUser(id: 1) { id } }", "Cannot query field 'deleteUser'"),
        ("query { resellerUser(id: 1) { id } }", "expected exactly one resellerEditUser"),
        (
            "mutation { a: resellerEditUser(id: 1) { id } b: resellerEditUser(id: 2) { id } }",
            "expected exactly one resellerEditUser mutation, got 2",
        ),
    ],
)
def test_malformed_documents_are_refused(query: str, message: str) -> None:
    assert message in refused(query, {}).message


@pytest.mark.parametrize(
    ("variables", "messages"),
    [
        ({"id": "seven"}, ["Variable '$id'", "Int cannot represent non-integer value"]),
        ({"id": 1.5}, ["Variable '$id'", "Int cannot represent non-integer value"]),
        ({"id": 2**31}, ["Variable '$id'", "non 32-bit signed integer"]),
        ({}, ["Variable '$id'", "Int!"]),
        ({"id": None}, ["Variable '$id'", "Int!"]),
        ({"id": 1, "resellerUserEdit": {"groupId": "nine"}}, ["Int cannot represent"]),
        ({"id": 1, "resellerUserEdit": "edit"}, ["'ResellerUserEdit'", "object"]),
        (
            {"id": 1, "resellerUserEdit": {"userProfileEdit": ["Ada"]}},
            ["'UserProfileEdit'", "object"],
        ),
        ({"id": 1, "resellerUserEdit": {"colour": "red"}}, ["'colour'", "ResellerUserEdit"]),
        (
            {"id": 1, "resellerUserEdit": {"userProfileEdit": {"nickname": "A"}}},
            ["'nickname'", "UserProfileEdit"],
        ),
        (
            {"id": 1, "resellerUserEdit": {"userProfileEdit": {"city": 7}}},
            ["String cannot represent a non string value"],
        ),
    ],
)
def test_wrong_variable_types_and_unknown_fields(variables: Any, messages: list[str]) -> None:
    message = refused(SEED_MUTATION, variables).message
    for part in messages:
        assert part in message


@pytest.mark.parametrize("variables", [[1, 2], "id=1", 7])
def test_variables_that_are_not_an_object(variables: Any) -> None:
    assert refused(SEED_MUTATION, variables).message == "the variables must be a JSON object"


def test_operation_name_picks_the_operation(user: ResellerUser) -> None:
    document = SEED_MUTATION + "\nquery other { resellerUser(id: 1) { id } }"
    assert "Must provide operation name" in refused(document, SEED_VARIABLES).message
    request = graphql.parse_edit(document, SEED_VARIABLES, operation_name="resellerEditUser")
    assert request.group_id == 0
    with pytest.raises(GraphQLRequestError, match="expected exactly one"):
        graphql.parse_edit(document, {}, "other")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ({"password": "short"}, "password: must be 8 to 256 characters, got 5"),
        ({"password": "p" * 257}, "password: must be 8 to 256 characters, got 257"),
        ({"multiLoginCount": -1}, "multiLoginCount: Input should be greater than or equal to 0"),
        ({"groupId": -3}, "groupId: Input should be greater than or equal to 0"),
        ({"resellerId": -1}, "resellerId: Input should be greater than or equal to 0"),
        (
            {"userProfileEdit": {"birthDate": "10/12/1990"}},
            "userProfileEdit.birthDate: must be a date as YYYY-MM-DD",
        ),
        (
            {"userProfileEdit": {"birthDate": "1990-02-30"}},
            "userProfileEdit.birthDate: must be a calendar date (YYYY-MM-DD)",
        ),
        ({"userProfileEdit": {"birthDate": NON_ASCII_DATE}}, "must be a date as YYYY-MM-DD"),
        ({"userProfileEdit": {"firstName": ""}}, "userProfileEdit.firstName: String should have"),
        ({"userProfileEdit": {"firstName": "x" * 257}}, "userProfileEdit.firstName: String"),
        ({"userProfileEdit": {"lastName": "x" * 257}}, "userProfileEdit.lastName: String should"),
        ({"userProfileEdit": {"phone": "1" * 65}}, "userProfileEdit.phone: String should"),
        ({"userProfileEdit": {"postalCode": "1" * 33}}, "userProfileEdit.postalCode: String"),
        ({"userProfileEdit": {"city": "c" * 257}}, "userProfileEdit.city: String should"),
    ],
)
def test_constraints_on_arguments(edit: dict[str, Any], problem: str) -> None:
    err = refused(SEED_MUTATION, {"id": 1, "resellerUserEdit": edit})
    assert problem in err.message
    assert err.to_dict()["errors"][0]["path"] == ["resellerEditUser"]  # type: ignore[index]


@pytest.mark.parametrize(
    "edit",
    [
        {"password": "p" * 8},
        {"password": "p" * 256},
        {"resellerId": 0, "groupId": 0, "multiLoginCount": 0},
        {"groupId": 2**31 - 1},
        {
            "userProfileEdit": {
                "firstName": "x",
                "lastName": "",
                "phone": "1" * 64,
                "postalCode": "1" * 32,
                "city": "c" * 256,
                "birthDate": "2000-02-29",
            }
        },
        {"userProfileEdit": {"firstName": "x" * 256, "lastName": "y" * 256}},
    ],
)
def test_values_on_the_bounds_are_accepted(user: ResellerUser, edit: dict[str, Any]) -> None:
    request = graphql.parse_edit(SEED_MUTATION, {"id": 1, "resellerUserEdit": edit})
    graphql.apply_edit(user, request)


def test_id_must_not_be_negative() -> None:
    assert (
        "id: Input should be greater than or equal to 0"
        in refused(SEED_MUTATION, {"id": -1}).message
    )


@given(reseller_user_edits())
def test_any_valid_edit_parses_and_applies(edit: dict[str, Any]) -> None:
    current = ResellerUser.model_validate(sample_user())
    request = graphql.parse_edit(SEED_MUTATION, {"id": 1, "resellerUserEdit": edit})
    new, changed = graphql.apply_edit(current, request)
    profile = edit.get("userProfileEdit", {})
    assert changed <= {"firstName", "lastName", "name"}
    assert new.first_name == profile.get("firstName", current.first_name)


@given(reseller_user_edits_with_one_bad_field())
def test_any_edit_with_a_bad_field_is_refused_naming_it(case: tuple[str, dict[str, Any]]) -> None:
    field, edit = case
    err = refused(SEED_MUTATION, {"id": 1, "resellerUserEdit": edit})
    assert [e["message"].split(":")[0] for e in err.errors] == [field]


def test_the_password_is_never_echoed() -> None:
    for value in (12345678, "hunter2", "x" * 300, ["hunter2hunter2"], True):
        err = refused(SEED_MUTATION, {"id": 1, "resellerUserEdit": {"password": value}})
        assert str(value) not in str(err.to_dict())
        assert "hunter2" not in str(err.to_dict())
    edit = {"password": "hunter2hunter2", "colour": "red"}  # quoted with the whole object
    assert "hunter2" not in str(refused(SEED_MUTATION, {"id": 1, "resellerUserEdit": edit}))


@pytest.mark.parametrize("literal", ["123456789", '["hunter2hunter2"]', "{ a: 987654321 }"])
def test_a_password_written_into_the_document_is_never_echoed(literal: str) -> None:
    edit = f"{{password: {literal}}}"
    query = f"mutation {{ resellerEditUser(id: 1, resellerUserEdit: {edit}) {{ id }} }}"
    text = str(refused(query, {}).to_dict())
    assert "***" in text
    for secret in ("123456789", "hunter2", "987654321"):
        assert secret not in text


def test_publish_edit(user: ResellerUser, recorder: RecordingPublisher) -> None:
    event_id, response = graphql.publish_edit(recorder, SEED_MUTATION, SEED_VARIABLES, user)
    assert event_id == "msg_1"
    assert recorder.calls[0][1].first_name == "<First_Name>"
    assert list(response["data"]["resellerEditUser"]) == RESPONSE_FIELDS
    unchanged = {"id": 1, "resellerUserEdit": {"groupId": 4}}
    event_id, _ = graphql.publish_edit(recorder, SEED_MUTATION, unchanged, user)
    assert event_id is None
    event_id, _ = graphql.publish_edit(
        recorder, SEED_MUTATION, unchanged, user, publish_unchanged=True
    )
    assert event_id == "msg_2"


def test_the_service_may_pass_its_lookup(user: ResellerUser, recorder: RecordingPublisher) -> None:
    asked: list[int] = []

    def load(user_id: int) -> ResellerUser | None:
        asked.append(user_id)
        return user if user_id == 42 else None

    variables = {"id": 42, "resellerUserEdit": {"userProfileEdit": {"lastName": "Byron"}}}
    event_id, response = graphql.publish_edit(recorder, SEED_MUTATION, variables, load)
    assert (event_id, asked) == ("msg_1", [42])
    assert response["data"]["resellerEditUser"]["id"] == user.id
    assert recorder.calls[0][1].name == "Ada Byron"


@pytest.mark.parametrize("current", [None, lambda _user_id: None])
def test_an_unknown_user_is_not_found(current: Any, recorder: RecordingPublisher) -> None:
    with pytest.raises(GraphQLRequestError) as err:
        graphql.publish_edit(recorder, SEED_MUTATION, SEED_VARIABLES, current)
    assert err.value.status == 404
    assert err.value.to_dict() == {
        "errors": [{"message": "Not Found", "path": ["resellerEditUser"]}]
    }
    assert recorder.calls == []


def test_a_bad_request_is_refused_before_the_user_is_looked_up(
    recorder: RecordingPublisher,
) -> None:
    def load(_user_id: int) -> ResellerUser | None:
        raise AssertionError("not reached")

    err = refused(SEED_MUTATION, {"id": "x"})
    assert err.status == 400
    with pytest.raises(GraphQLRequestError):
        graphql.publish_edit(recorder, SEED_MUTATION, {"id": "x"}, load)
