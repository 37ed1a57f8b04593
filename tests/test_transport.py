"""Address vetting happens on the address actually connected to (the rules: test_ssrf.py); an
attempt's request goes out in one piece."""

from __future__ import annotations

import socket

import httpx
import pytest

from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.errors import RefusedAddressError
from reseller_webhooks.worker.http.transport import COALESCE_BYTES, DeadlineStream, GuardedTransport


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


def test_a_request_goes_out_in_one_send_when_the_response_is_read() -> None:
    """httpcore writes a request's head, then its body: the stream holds them until the
    response is read and sends them together (one system call, one wake-up of the peer)."""
    ours, peer = socket.socketpair()
    stream = DeadlineStream(ours)
    try:
        stream.write(b"POST /hook HTTP/1.1\r\ncontent-length: 2\r\n\r\n")
        stream.write(b"{}")
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(65536)  # nothing sent yet
        peer.settimeout(5)
        peer.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        assert stream.read(65536, timeout=5) == b"HTTP/1.1 204 No Content\r\n\r\n"
        assert peer.recv(65536) == b"POST /hook HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"
        big = b"x" * COALESCE_BYTES  # a large body is sent as it comes, behind the head
        stream.write(b"PUT / HTTP/1.1\r\n\r\n")
        stream.write(big)
        received = b""
        while len(received) < len(big) + 18:
            received += peer.recv(1 << 20)
        assert received == b"PUT / HTTP/1.1\r\n\r\n" + big
    finally:
        stream.close()
        peer.close()
