from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from reseller_webhooks.producers.user import ResellerUser
from reseller_webhooks.worker.devserver.samples import sample_user

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


@pytest.fixture
def user() -> ResellerUser:
    return ResellerUser.model_validate({**sample_user(), "role": "admin,billing"})


@pytest.fixture
def recorder() -> RecordingPublisher:
    return RecordingPublisher()
