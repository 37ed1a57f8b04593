"""A deliver task's chunk goes out several attempts at once from its one thread
(``Sender.attempts``), within the subscriber's ``max_in_flight``."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reseller_webhooks.worker.config.subscribers import Subscriber, SubscribersConfig
from reseller_webhooks.worker.delivery.lane import slots_and_width
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.http.sender import Sender
from tests.helpers import new_secret
from tests.topology import make_certificates


def config(url: str) -> SubscribersConfig:
    return SubscribersConfig.model_validate(
        {
            "allow_private_networks": True,
            "subscribers": [
                {"id": "s", "url": url, "events": ["*"], "secret": new_secret(), "timeout_s": 5}
            ],
        }
    )


class OpenAtOnce:
    """Answers once ``width`` requests are open together, and counts the most open at once."""

    def __init__(self, width: int) -> None:
        self._barrier = threading.Barrier(width, timeout=5)
        self._lock = threading.Lock()
        self._open = 0
        self.most_open = 0

    def __call__(self, received: Received) -> Reply:
        with self._lock:
            self._open += 1
            self.most_open = max(self.most_open, self._open)
        try:
            self._barrier.wait()  # broken (an exception: no 200) unless ``width`` are open
        finally:
            with self._lock:
                self._open -= 1
        return Reply()


def attempts(sender: Sender, sub: Subscriber, ids: list[str], width: int) -> list[tuple[str, int]]:
    jobs = ((i, i, b"{}") for i in ids)
    return [(key, result.status or 0) for key, result in sender.attempts(sub, jobs, width=width)]


def test_a_chunk_goes_out_width_attempts_at_once() -> None:
    respond = OpenAtOnce(3)
    with Receiver(respond=respond) as receiver:
        cfg = config(f"{receiver.url}/hook")
        sender = Sender(cfg)
        try:
            results = attempts(sender, cfg.subscribers[0], [f"msg_{i}" for i in range(6)], 3)
        finally:
            sender.close()
    assert sorted(results) == [(f"msg_{i}", 200) for i in range(6)]
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == [
        f"msg_{i}" for i in range(6)
    ]
    assert respond.most_open == 3


def test_each_result_comes_as_its_attempt_ends() -> None:
    """A slow answer holds back neither the chunk's other attempts nor their results."""
    slow = threading.Event()

    def respond(received: Received) -> Reply:
        if received.headers["webhook-id"] == "msg_slow":
            slow.wait(5)
        return Reply()

    with Receiver(respond=respond) as receiver:
        cfg = config(f"{receiver.url}/hook")
        sender = Sender(cfg)
        order = []
        try:
            jobs = ((i, i, b"{}") for i in ["msg_slow", "msg_a", "msg_b", "msg_c"])
            for key, result in sender.attempts(cfg.subscribers[0], jobs, width=2):
                order.append((key, result.status))
                if len(order) == 3:
                    slow.set()
        finally:
            slow.set()
            sender.close()
    assert order == [("msg_a", 200), ("msg_b", 200), ("msg_c", 200), ("msg_slow", 200)]


@pytest.fixture
def https_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, ssl.SSLContext]]:
    certs = make_certificates(tmp_path / "certs")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certs.server_cert, certs.server_key)
    receiver = Receiver()
    receiver._server.socket = server.wrap_socket(receiver._server.socket, server_side=True)
    client = ssl.create_default_context(cafile=str(certs.ca))
    with receiver:
        yield receiver, client


def test_https_attempts_verify_the_certificate(
    https_receiver: tuple[Receiver, ssl.SSLContext],
) -> None:
    receiver, client = https_receiver
    cfg = config(receiver.url.replace("http://127.0.0.1", "https://localhost") + "/hook")
    trusting, default = Sender(cfg, tls_context=client), Sender(cfg)
    try:
        results = attempts(trusting, cfg.subscribers[0], ["msg_1", "msg_2"], 1)
        refused = default.attempt(cfg.subscribers[0], "msg_3", b"{}")
    finally:
        trusting.close()
        default.close()
    assert results == [("msg_1", 200), ("msg_2", 200)]
    assert [r.headers["webhook-id"] for r in receiver.received] == ["msg_1", "msg_2"]
    assert refused.status is None
    assert "certificate verify failed" in (refused.error_text or "")


@pytest.mark.parametrize(
    ("max_in_flight", "slots", "width"),
    [(1, 1, 1), (2, 1, 2), (4, 1, 4), (5, 2, 2), (8, 2, 4), (10, 3, 3), (64, 16, 4)],
)
def test_slots_and_width_never_exceed_max_in_flight(
    max_in_flight: int, slots: int, width: int
) -> None:
    assert slots_and_width(max_in_flight) == (slots, width)
    assert slots * width <= max_in_flight
