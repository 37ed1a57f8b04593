"""Every attempt ends by its deadline, whatever the peer does.

Each peer is a real loopback server that misbehaves in exactly one phase of the exchange. Every
peer thread stops by itself (at the end of the test, or after ``LIFETIME_S`` at the latest).
Run with ``-s`` to see how long each attempt took against its ``timeout_s`` and bound.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest

from reseller_webhooks.worker.config.subscribers import SubscribersConfig
from reseller_webhooks.worker.errors import RetryableDeliveryError
from reseller_webhooks.worker.http.sender import (
    ATTEMPT_SLACK_S,
    AttemptResult,
    Sender,
    attempt_bound_s,
)
from reseller_webhooks.worker.http.transport import IPAddress, Resolve
from tests.helpers import new_secret, wait_until

TIMEOUT_S = 1.0
LIFETIME_S = 15.0
TRICKLE_S = 0.2
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Behaviour = Callable[["Peer", socket.socket], None]


@dataclass
class Peer:
    """A loopback TCP server running ``behave`` on each connection it accepts."""

    listener: socket.socket
    behave: Behaviour | None  # None: never accepts
    stop: threading.Event
    connections: int = 0
    requests: int = 0

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def serve(self) -> None:
        threads: list[threading.Thread] = []
        ends = time.monotonic() + LIFETIME_S
        self.listener.settimeout(0.05)
        while not self.stop.is_set() and time.monotonic() < ends and self.behave:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)
        self.stop.wait(max(ends - time.monotonic(), 0))
        self.stop.set()
        for thread in threads:
            thread.join(LIFETIME_S)
        self.listener.close()

    def _run(self, conn: socket.socket) -> None:
        conn.settimeout(LIFETIME_S)
        with conn:
            try:
                assert self.behave is not None
                self.behave(self, conn)
            except OSError:
                pass  # the client gave up: that is the point

    def read_request(self, conn: socket.socket, *, drain_s: float = 0.0) -> None:
        """Read the request head and body; ``drain_s`` > 0 reads the body 1 MiB at a time,
        steadily (no send waits long) but slower than the client can send."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        if data.startswith(b"POST "):
            self.requests += 1
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        received, paced = len(body), 0
        while received < length:
            if drain_s and paced >= 1 << 20:
                if self.stop.wait(drain_s):
                    return
                paced = 0
            chunk = conn.recv(65536)
            if not chunk:
                return
            received += len(chunk)
            paced += len(chunk)


@pytest.fixture
def serve() -> Iterator[Callable[..., Peer]]:
    peers: list[tuple[Peer, threading.Thread]] = []

    def start(behave: Behaviour | None, host: str = "127.0.0.1", port: int = 0) -> Peer:
        listener = socket.socket()
        listener.bind((host, port))
        listener.listen(0 if behave is None else 8)
        peer = Peer(listener, behave, threading.Event())
        thread = threading.Thread(target=peer.serve, daemon=True)
        thread.start()
        peers.append((peer, thread))
        return peer

    yield start
    for peer, thread in peers:
        peer.stop.set()
        thread.join(LIFETIME_S + 5)
        assert not thread.is_alive()


def attempt(
    name: str,
    url: str,
    *,
    body: bytes = b"{}",
    body_limit: int = 4096,
    resolve: Resolve | None = None,
) -> AttemptResult:
    """One attempt at ``url``, which must end in a retryable error within the bound."""
    config = SubscribersConfig.model_validate(
        {
            "allow_private_networks": True,
            "subscribers": [
                {
                    "id": "hostile",
                    "url": url,
                    "events": ["*"],
                    "secret": new_secret(),
                    "timeout_s": TIMEOUT_S,
                }
            ],
        }
    )
    extra = {} if resolve is None else {"resolve": resolve}
    sender = Sender(config, body_limit=body_limit, **extra)
    try:
        started = time.monotonic()
        result = sender.attempt(config.subscribers[0], "msg_1", body)
        elapsed = time.monotonic() - started
    finally:
        sender.close()
    bound = attempt_bound_s(TIMEOUT_S)
    print(
        f"\n{name}: ended after {elapsed:.3f} s (timeout_s {TIMEOUT_S:g} s, bound {bound:g} s):"
        f" {result.error_text}"
    )
    assert elapsed <= bound, f"{name}: {elapsed:.2f} s, over the bound of {bound} s"
    assert isinstance(result.error, RetryableDeliveryError), result.error_text
    return result


# -- behaviours: each misbehaves in one phase -----------------------------------------------------


def trickle(peer: Peer, conn: socket.socket, data: bytes) -> None:
    for i in range(len(data)):
        if peer.stop.wait(TRICKLE_S):
            return
        conn.sendall(data[i : i + 1])


def never_answers(peer: Peer, conn: socket.socket) -> None:
    peer.read_request(conn)
    peer.stop.wait(LIFETIME_S)


def trickles_head(peer: Peer, conn: socket.socket) -> None:
    peer.read_request(conn)
    trickle(peer, conn, RESPONSE)


def trickles_body(peer: Peer, conn: socket.socket) -> None:
    peer.read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    trickle(peer, conn, b"x" * 100)


def endless_body(peer: Peer, conn: socket.socket) -> None:
    peer.read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while not peer.stop.wait(0.002):
        conn.sendall(b"400\r\n" + b"x" * 0x400 + b"\r\n")


def reads_slowly(peer: Peer, conn: socket.socket) -> None:
    peer.read_request(conn, drain_s=0.2)  # 5 MiB/s: no send waits 1 s, the whole body does
    peer.stop.wait(LIFETIME_S)


def _breaks_off(peer: Peer, conn: socket.socket, *, reset: bool) -> None:
    peer.read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    peer.stop.wait(0.1)
    if reset:  # close with RST instead of FIN
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def resets_mid_response(peer: Peer, conn: socket.socket) -> None:
    _breaks_off(peer, conn, reset=True)


def closes_mid_response(peer: Peer, conn: socket.socket) -> None:
    _breaks_off(peer, conn, reset=False)


def stalls_tls(peer: Peer, conn: socket.socket) -> None:
    conn.recv(65536)  # the ClientHello
    peer.stop.wait(LIFETIME_S)


def trickles_tls(peer: Peer, conn: socket.socket) -> None:
    conn.recv(65536)  # the ClientHello; then a handshake record announcing 16 KiB, a byte at a time
    trickle(peer, conn, b"\x16\x03\x03\x40\x00" + b"\x02" * 200)


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behave", "scheme", "error"),
    [
        (never_answers, "http", "timed out waiting for the response"),
        (trickles_head, "http", "timed out waiting for the response"),
        (trickles_body, "http", "timed out waiting for the response"),
        (stalls_tls, "https", "timed out connecting"),
        (trickles_tls, "https", "timed out connecting"),
        (resets_mid_response, "http", "the connection broke while reading the response"),
        (closes_mid_response, "http", "the subscriber broke off or garbled the HTTP exchange"),
    ],
)
def test_a_peer_misbehaving_in_one_phase(
    serve: Callable[..., Peer], behave: Behaviour, scheme: str, error: str
) -> None:
    peer = serve(behave)
    result = attempt(behave.__name__, f"{scheme}://127.0.0.1:{peer.port}/hook")
    assert result.status is None
    assert error in (result.error_text or "")
    assert peer.connections == 1  # no second try, not even on a fresh connection
    if scheme == "http":
        assert peer.requests == 1


def test_an_endless_body_past_any_size_limit(serve: Callable[..., Peer]) -> None:
    peer = serve(endless_body)
    result = attempt("endless_body", f"http://127.0.0.1:{peer.port}/", body_limit=1 << 40)
    assert "timed out waiting for the response" in (result.error_text or "")
    assert (peer.connections, peer.requests) == (1, 1)


def test_a_peer_that_reads_the_request_slowly(serve: Callable[..., Peer]) -> None:
    peer = serve(reads_slowly)
    # 24 MiB: seconds at the pace the peer reads, beyond what the sockets' buffers hold; small
    # enough that signing it takes a small part of the 1 s deadline on a busy machine.
    body = b"[" + b"0," * (12 << 20) + b"0]"
    result = attempt("reads_slowly", f"http://127.0.0.1:{peer.port}/", body=body)
    assert "timed out sending the request" in (result.error_text or "")
    assert (peer.connections, peer.requests) == (1, 1)


def test_connects_that_never_complete_share_one_deadline(serve: Callable[..., Peer]) -> None:
    """A full accept queue drops SYNs, so a connect hangs; two such addresses for one name."""
    first = serve(None, host="127.0.0.2")
    second = serve(None, host="127.0.0.3", port=first.port)
    # listen(0) queues one connection: take that place, and the attempt's connects hang.
    fillers = [socket.create_connection((h, first.port), 1) for h in ("127.0.0.2", "127.0.0.3")]
    addresses = [ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.3")]
    try:
        result = attempt(
            "connect_never_completes",
            f"http://stalled.test:{first.port}/",
            resolve=lambda host, port: addresses,
        )
    finally:
        for filler in fillers:
            filler.close()
    assert "timed out connecting" in (result.error_text or "")
    assert (first.connections, second.connections) == (0, 0)


def test_a_name_that_resolves_slowly(serve: Callable[..., Peer]) -> None:
    peer = serve(never_answers)
    answer = threading.Event()

    def slow(host: str, port: int) -> Sequence[IPAddress]:
        answer.wait(LIFETIME_S)
        return [ipaddress.ip_address("127.0.0.1")]

    try:
        result = attempt("slow_name_resolution", f"http://slow.test:{peer.port}/", resolve=slow)
    finally:
        answer.set()
    assert "timed out resolving slow.test" in (result.error_text or "")
    assert peer.connections == 0


def test_the_bound_is_the_timeout_and_a_fixed_slack() -> None:
    assert attempt_bound_s(15) == 15 + ATTEMPT_SLACK_S
    assert 0 < ATTEMPT_SLACK_S <= 2


def test_a_kept_alive_connection_the_peer_closed_while_idle_is_not_reused(
    serve: Callable[..., Peer],
) -> None:
    """Why no retry is needed for stale connections: the pool sees the hang-up before reuse."""
    closed: list[int] = []

    def answers_then_hangs_up(peer: Peer, conn: socket.socket) -> None:
        peer.read_request(conn)
        conn.sendall(RESPONSE)
        peer.stop.wait(0.05)
        conn.close()
        closed.append(1)

    peer = serve(answers_then_hangs_up)
    config = SubscribersConfig.model_validate(
        {
            "allow_private_networks": True,
            "subscribers": [
                {
                    "id": "idle",
                    "url": f"http://127.0.0.1:{peer.port}/",
                    "events": ["*"],
                    "secret": new_secret(),
                    "timeout_s": TIMEOUT_S,
                }
            ],
        }
    )
    sender = Sender(config)
    try:
        first = sender.attempt(config.subscribers[0], "msg_1", b"{}")
        wait_until(lambda: closed, 5, "the peer to hang up")
        second = sender.attempt(config.subscribers[0], "msg_2", b"{}")
    finally:
        sender.close()
    assert (first.status, second.status) == (200, 200), second.error_text
    assert (peer.connections, peer.requests) == (2, 2)
