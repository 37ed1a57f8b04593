"""Address vetting happens on the address actually connected to."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from worker.errors import RefusedAddressError
from worker.receiver import Receiver
from worker.transport import GuardedTransport, address_allowed


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.100.100.200", False),  # shared address space (another metadata endpoint)
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fd00:ec2::254", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("8.8.8.8", True),
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_address_table(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address)) is allowed


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
