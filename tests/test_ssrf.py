"""Which addresses a subscriber may be reached at (``address_allowed``), in every IPv6 form that
carries an IPv4 address, and URL hosts that try to hide a loopback or scoped address."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from reseller_webhooks.worker.config.subscribers import parse_config
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.errors import ConfigError, RefusedAddressError
from reseller_webhooks.worker.http.transport import GuardedTransport, address_allowed
from tests.helpers import new_secret

ALLOWED = [
    ("8.8.8.8", "public IPv4"),
    ("93.184.216.34", "public IPv4"),
    ("2606:4700:4700::1111", "public IPv6"),
    ("::ffff:8.8.8.8", "IPv4-mapped, public"),
    ("64:ff9b::8.8.8.8", "NAT64 well-known prefix, public"),
    ("64:ff9b:1::8.8.8.8", "NAT64 local-use prefix as a /96, public"),
    ("2002:808:808::1", "6to4 of 8.8.8.8"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "Teredo: server 65.54.227.120, client 8.8.8.8"),
]

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local: cloud metadata"),
    ("100.100.100.200", "shared address space (another metadata endpoint)"),
    ("0.0.0.0", "this network"),
    ("192.0.2.1", "documentation"),
    ("224.0.0.1", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fd00:ec2::254", "unique local: cloud metadata"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local (deprecated)"),
    ("ff02::1", "multicast, link scope"),
    ("ff0e::1", "multicast, global scope"),
    ("2001:db8::1", "documentation"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
    ("::127.0.0.1", "IPv4-compatible (deprecated) loopback"),
    ("::8.8.8.8", "IPv4-compatible (deprecated), even of a public address"),
    ("::ffff:0:8.8.8.8", "IPv4-translated"),
    ("64:ff9b::127.0.0.1", "NAT64 of loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64 of 169.254.169.254"),
    ("64:ff9b::10.0.0.1", "NAT64 of a private address"),
    ("64:ff9b:1::10.0.0.1", "local-use NAT64 of a private address"),
    ("64:ff9b:1:abcd::808:808", "local-use NAT64 in another layout: IPv4 position unknown"),
    ("2002:7f00:1::1", "6to4 of loopback"),
    ("2002:a9fe:a9fe::1", "6to4 of 169.254.169.254"),
    ("2002:c0a8:101::1", "6to4 of 192.168.1.1"),
    ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "Teredo, server 10.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo, client 127.0.0.1 (bits inverted)"),
    ("fe80::1%eth0", "link-local with a zone id"),
    ("2606:4700:4700::1111%eth0", "a public address with a zone id"),
]


@pytest.mark.parametrize(
    ("address", "allowed"),
    [(a, True) for a, _ in ALLOWED] + [(a, False) for a, _ in REFUSED],
    ids=[f"{a} ({why})" for a, why in ALLOWED + REFUSED],
)
def test_address_table(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address)) is allowed


@pytest.mark.parametrize(
    "host",
    [
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "[fe80::1%25eth0]",  # zone id, percent-encoded as in a URL
        "[fe80::1%eth0]",
        "[2606:4700:4700::1111%25lo]",
        "2130706433",  # 127.0.0.1 as one number
        "0x7f.1",
        "127.1",
        "localhost",
    ],
)
def test_url_hosts_that_hide_a_local_address(receiver: Receiver, host: str) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    transport = GuardedTransport(allow_private=False, limits=httpx.Limits())
    with httpx.Client(transport=transport) as c, pytest.raises(RefusedAddressError):
        c.post(f"http://{host}:{port}/x", content=b"{}")
    assert receiver.received == []


def test_an_octal_ipv4_host_is_not_a_valid_url(receiver: Receiver) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    transport = GuardedTransport(allow_private=False, limits=httpx.Limits())
    with httpx.Client(transport=transport) as c, pytest.raises(httpx.InvalidURL):
        c.post(f"http://0177.0.0.1:{port}/x", content=b"{}")
    assert receiver.received == []


def test_a_url_with_a_zone_id_is_refused_in_the_configuration() -> None:
    raw = {
        "subscribers": [
            {
                "id": "zoned",
                "url": "http://[fe80::1%25eth0]/hook",
                "events": ["*"],
                "secret": new_secret(),
            }
        ]
    }
    with pytest.raises(ConfigError, match=r"url"):
        parse_config(raw)
