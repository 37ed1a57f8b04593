"""Address vetting happens on the address actually connected to (the rules: test_ssrf.py)."""

from __future__ import annotations

import httpx
import pytest

from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.errors import RefusedAddressError
from reseller_webhooks.worker.http.transport import GuardedTransport


def client(allow_private: bool) -> httpx.Client:
    return httpx.Client(
        transport=GuardedTransport(allow_private=allow_private, limits=httpx.Limits())
    )


def test_a_name_that_resolves_to_loopback_is_refused(receiver: Receiver) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    with client(False) as c, pytest.raises(RefusedAddressError, match=r"127\.0\.0\.1"):
        c.post(f"http://localhost:{port}/x", content=b"{}")
    assert receiver.received == []


def test_private_networks_allowed_by_flag(receiver: Receiver) -> None:
    with client(True) as c:
        assert c.post(f"{receiver.url}/x", content=b"{}").status_code == 200
    assert len(receiver.received) == 1
