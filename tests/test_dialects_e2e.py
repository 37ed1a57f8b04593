"""One end-to-end run per API dialect: request -> one call -> signed webhook at a real receiver."""

from __future__ import annotations

from typing import Any

import pytest

from reseller_webhooks.producers.dialects import graphql, json_patch, rest_create, rest_update
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.user import ResellerUser
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.dialects.helpers import SEED_MUTATION, SEED_VARIABLES
from tests.helpers import Deployment

GUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
PASSWORD = "s3cret-passw0rd"


@pytest.fixture
def running(deployment: Deployment, receiver: Receiver) -> Receiver:
    deployment.subscriber("crm", f"{receiver.url}/crm")
    deployment.start_worker()
    return receiver


def received(receiver: Receiver, event_id: str) -> dict[str, Any]:
    item = receiver.wait_for(1)[0]
    assert item.headers["webhook-id"] == event_id
    assert PASSWORD not in item.body.decode()
    return dict(item.json)


def current() -> ResellerUser:
    return ResellerUser.model_validate({**sample_user(), "role": "admin,billing"})


def test_rest_create(running: Receiver, publisher: Publisher) -> None:
    request = rest_create.parse_request(
        {
            "firstName": "Grace",
            "lastName": "Hopper",
            "email": "grace@example.com",
            "role": "admin",
            "allowCustomerPortalAccess": True,
            "password": PASSWORD,
        }
    )
    created = {
        **sample_user(),
        "firstName": request.first_name,
        "lastName": request.last_name,
        "name": "Grace Hopper",
        "email": request.email,
        "role": request.role,
    }
    event_id = rest_create.publish_created(publisher, created)
    body = received(running, event_id)
    assert body["event"] == "reseller.user.created"
    assert body["data"]["email"] == "grace@example.com"


def test_rest_partial_update(running: Receiver, publisher: Publisher) -> None:
    event_id = rest_update.publish_update(
        publisher, current(), {"company": "Navy", "lastName": None}
    )
    assert event_id is not None
    body = received(running, event_id)
    assert body["event"] == "reseller.user.updated"
    assert (body["data"]["company"], body["data"]["lastName"], body["data"]["name"]) == (
        "Navy",
        None,
        "Ada",
    )


def test_json_patch(running: Receiver, publisher: Publisher) -> None:
    ops = [
        {"op": "replace", "path": "/roles", "value": ["support"]},
        {"op": "replace", "path": "/displayName", "value": "My New Name"},
    ]
    event_id = json_patch.publish_patch(publisher, GUID, GUID, current(), ops)
    assert event_id is not None
    body = received(running, event_id)
    assert (body["data"]["role"], body["data"]["name"]) == ("support", "My New Name")


def test_graphql(running: Receiver, publisher: Publisher) -> None:
    variables = {
        **SEED_VARIABLES,
        "resellerUserEdit": {**SEED_VARIABLES["resellerUserEdit"], "password": PASSWORD},
    }
    event_id, response = graphql.publish_edit(publisher, SEED_MUTATION, variables, current())
    assert event_id is not None
    body = received(running, event_id)
    assert body["data"]["firstName"] == "<First_Name>"
    assert "Phone_Number" not in str(body)
    assert response["data"]["resellerEditUser"]["id"] == "usr_9b2f1c"
