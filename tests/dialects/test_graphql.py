"""GraphQL (seed 003): real parsing and validation by graphql-core; constraints; the response."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from producers.dialects import graphql
from producers.dialects.errors import GraphQLRequestError
from producers.user import ResellerUser
from tests.dialects.conftest import RecordingPublisher

SEED_MUTATION = """
mutation resellerEditUser ($id: Int!, $resellerUserEdit: ResellerUserEdit) {
resellerEditUser (id: $id, resellerUserEdit: $resellerUserEdit) {
id
email
username
resellerId
role
enabled
radAccess
radAccessClear
createdAt
updatedAt
}
}
"""
SEED_VARIABLES: dict[str, Any] = {
    "id": 0,
    "resellerUserEdit": {
        "password": "<User_Password>",
        "resellerId": 0,
        "groupId": 0,
        "multiLoginCount": 0,
        "userProfileEdit": {
            "firstName": "<First_Name>",
            "lastName": "<Last_Name>",
            "phone": "<Phone_Number>",
            "address": "<Address>",
            "city": "<City>",
            "country": "<Country>",
            "postalCode": "<Postal_Code>",
            "birthDate": "1990-12-10",  # the seed shows the format, <YYYY-MM-DD>
        },
    },
}
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
    ("variables", "message"),
    [
        ({"id": "seven"}, "Variable '$id' has invalid value"),
        ({"id": 1.5}, "Variable '$id' has invalid value"),
        ({}, "Variable '$id'"),
        ({"id": 1, "resellerUserEdit": {"groupId": "nine"}}, "Int cannot represent"),
        ({"id": 1, "resellerUserEdit": {"colour": "red"}}, "unknown field 'colour'"),
        (
            {"id": 1, "resellerUserEdit": {"userProfileEdit": {"nickname": "A"}}},
            "unknown field 'nickname'",
        ),
    ],
)
def test_wrong_variable_types_and_unknown_fields(variables: Any, message: str) -> None:
    assert message in refused(SEED_MUTATION, variables).message


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ({"password": "short"}, "password: must be 8 to 256 characters, got 5"),
        ({"password": "p" * 257}, "password: must be 8 to 256 characters, got 257"),
        ({"multiLoginCount": -1}, "multiLoginCount: Input should be greater than or equal to 0"),
        ({"groupId": -3}, "groupId: Input should be greater than or equal to 0"),
        (
            {"userProfileEdit": {"birthDate": "10/12/1990"}},
            "userProfileEdit.birthDate: must be a date as YYYY-MM-DD",
        ),
        ({"userProfileEdit": {"birthDate": "1990-02-30"}}, "userProfileEdit.birthDate"),
        ({"userProfileEdit": {"firstName": ""}}, "userProfileEdit.firstName: String should have"),
        ({"userProfileEdit": {"lastName": "x" * 257}}, "userProfileEdit.lastName: String should"),
    ],
)
def test_constraints_on_arguments(edit: dict[str, Any], problem: str) -> None:
    err = refused(SEED_MUTATION, {"id": 1, "resellerUserEdit": edit})
    assert problem in err.message
    assert err.to_dict()["errors"][0]["path"] == ["resellerEditUser"]  # type: ignore[index]


def test_the_password_is_never_echoed() -> None:
    for value in (12345678, "hunter2", "x" * 300):
        err = refused(SEED_MUTATION, {"id": 1, "resellerUserEdit": {"password": value}})
        assert str(value) not in str(err.to_dict())


def test_publish_edit(user: ResellerUser, recorder: RecordingPublisher) -> None:
    event_id, response = graphql.publish_edit(
        recorder,
        SEED_MUTATION,
        SEED_VARIABLES,
        user,  # type: ignore[arg-type]
    )
    assert event_id == "msg_1"
    assert recorder.calls[0][1].first_name == "<First_Name>"
    assert list(response["data"]["resellerEditUser"]) == RESPONSE_FIELDS
    unchanged = {"id": 1, "resellerUserEdit": {"groupId": 4}}
    event_id, _ = graphql.publish_edit(recorder, SEED_MUTATION, unchanged, user)  # type: ignore[arg-type]
    assert event_id is None
