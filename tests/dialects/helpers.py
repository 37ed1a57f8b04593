"""What the dialect tests share: a publisher that records calls, and the seed's examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reseller_webhooks.producers.user import ResellerUser

GUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


@dataclass
class RecordingPublisher:
    """Stands in for Publisher in unit tests only; the end-to-end tests use the real one."""

    calls: list[tuple[str, ResellerUser]] = field(default_factory=list)

    def user_created(self, user: Any) -> str:
        self.calls.append(("reseller.user.created", ResellerUser.model_validate(user)))
        return f"msg_{len(self.calls)}"

    def user_updated(self, user: Any) -> str:
        self.calls.append(("reseller.user.updated", ResellerUser.model_validate(user)))
        return f"msg_{len(self.calls)}"


#: The GraphQL mutation and variables the seed documents.
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
