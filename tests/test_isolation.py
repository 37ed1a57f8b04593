"""Hostile subscribers against the real pipeline: they hold up only themselves, and no delivery
is ever attempted twice at the same time however long they make an attempt last."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import Deployment, wait_until

pytestmark = pytest.mark.slow


@dataclass
class HostilePeer:
    """A loopback HTTP peer that reads each request, then answers its status line one byte per
    ``trickle_s`` (or never, with ``trickle_s=None``). Counts requests in flight per webhook-id."""

    trickle_s: float | None
    requests: Counter[str] = field(default_factory=Counter)
    overlaps: list[str] = field(default_factory=list)
    most_in_flight: int = 0
    _in_flight: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> Iterator[str]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        acceptor.start()
        try:
            yield f"http://127.0.0.1:{port}/hostile"
        finally:
            self._stop.set()
            acceptor.join(timeout=5)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _ended(self, conn: socket.socket, wait_s: float) -> bool:
        """Waits ``wait_s``; True as soon as the test ends or the worker closes the connection
        (its deadline passed): from then on the request is no longer in flight. Noticed when it
        happens, not at the next byte sent, which a closed connection may still take."""
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.is_set():
                return True
            readable, _, _ = select.select([conn], [], [], min(left, 0.05))
            if readable:
                try:
                    if conn.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
                self._stop.wait(min(left, 0.05))  # bytes we do not read: no busy loop
        return self._stop.is_set()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            data = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
            lines = data.split(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
            name = "webhook-id:"
            wid = next((h[len(name) :].strip() for h in lines if h.lower().startswith(name)), "?")
            with self._lock:
                self.requests[wid] += 1
                self._in_flight[wid] += 1
                if self._in_flight[wid] > 1:
                    self.overlaps.append(wid)
                self.most_in_flight = max(self.most_in_flight, sum(self._in_flight.values()))
            try:
                for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n":
                    if self._ended(conn, self.trickle_s if self.trickle_s is not None else 60):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                pass  # the worker gave up: its deadline
            finally:
                with self._lock:
                    self._in_flight[wid] -= 1


def test_an_attempt_that_never_ends_is_never_overlapped_by_a_second_one(
    deployment: Deployment, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    """Headers trickle for far longer than the lease; the deadline ends each attempt, the
    schedule decides the next one, and the attempt counter counts attempts actually made."""
    peer = HostilePeer(trickle_s=0.5)  # 19 s for a status line: longer than any lease
    with contextlib.contextmanager(peer.serve)() as url:
        deployment.subscriber(
            "slow", url, timeout_s=1, retry={"schedule_s": [0, 1, 1], "jitter": 0}
        )
        deployment.start_worker()
        ids = [publisher.user_created({**sample_user(), "id": f"usr_{i}"}) for i in range(3)]
        wait_until(lambda: rdb.zcard(keys.dead) == 3, timeout_s=40, what="all three dead")
    assert peer.overlaps == []
    assert {i: peer.requests[i] for i in ids} == dict.fromkeys(ids, 3)
    for event_id in ids:
        assert rdb.hget(keys.delivery(f"{event_id}:slow"), "attempts") == b"3"


@pytest.mark.parametrize("batched", [False, True], ids=["one-per-call", "one-batch"])
def test_hostile_subscribers_hold_up_only_themselves(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, batched: bool
) -> None:
    """One never answers, one trickles its headers; both are listed before the healthy one.
    Twenty events, published one per call or as one batch: every healthy delivery arrives
    within seconds, and neither hostile subscriber ever has more attempts in flight than its
    bound."""
    hangs, trickles = HostilePeer(trickle_s=None), HostilePeer(trickle_s=0.5)
    with (
        contextlib.contextmanager(hangs.serve)() as hang_url,
        contextlib.contextmanager(trickles.serve)() as trickle_url,
    ):
        deployment.subscriber("hangs", hang_url, timeout_s=5, max_in_flight=2)
        deployment.subscriber("trickles", trickle_url, timeout_s=5, max_in_flight=2)
        deployment.subscriber("healthy", f"{receiver.url}/healthy")
        deployment.start_worker()
        started = time.monotonic()
        users = [{**sample_user(), "id": f"usr_{i}"} for i in range(20)]
        if batched:
            ids = publisher.publish_batch([("reseller.user.created", u) for u in users])
        else:
            ids = [publisher.user_created(u) for u in users]
        wait_until(
            lambda: {r.headers["webhook-id"] for r in receiver.received} >= set(ids),
            timeout_s=5,
            what="every healthy delivery",
        )
        healthy_s = time.monotonic() - started
        wait_until(lambda: sum(hangs.requests.values()) >= 2, what="the hanging peer reached")
    how = "one batch" if batched else "one per call"
    print(f"\n[isolation] {how}: 20 healthy deliveries in {healthy_s:.2f} s beside two hostile")
    assert hangs.most_in_flight <= 2
    assert trickles.most_in_flight <= 2
