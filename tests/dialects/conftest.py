from __future__ import annotations

import pytest

from reseller_webhooks.producers.user import ResellerUser
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.dialects.helpers import RecordingPublisher


@pytest.fixture
def user() -> ResellerUser:
    return ResellerUser.model_validate({**sample_user(), "role": "admin,billing"})


@pytest.fixture
def recorder() -> RecordingPublisher:
    return RecordingPublisher()
