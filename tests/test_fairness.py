"""Slow subscribers against the real pipeline: while their requests are held, another
subscriber's events still find a thread."""

from __future__ import annotations

import threading

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import Deployment, wait_until

pytestmark = pytest.mark.slow


class Held:
    """Answers ``/slow...`` requests only once released; every other path at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, item: Received) -> Reply:
        if item.path.startswith("/slow"):
            with self._lock:
                self.in_flight += 1
            self.release.wait(timeout=60)
            with self._lock:
                self.in_flight -= 1
        return Reply()


def test_a_healthy_subscriber_is_served_while_slow_ones_hold_requests(
    deployment: Deployment, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    """A worker of 4 threads; two subscribers whose endpoint holds every request, each allowed
    two attempts in flight, get a backlog first: they may take 3 threads, never all 4 (each
    may hold half, and a subscriber already served, not known to be fast, does not take the
    last free thread). The
    healthy subscriber's events, published after, arrive while those requests are still held;
    once released, every event reaches the slow ones too."""
    held = Held()
    with Receiver(respond=held) as receiver:
        for name in ("slow-a", "slow-b"):
            deployment.subscriber(
                name, f"{receiver.url}/{name}", ["reseller.user.created"], max_in_flight=2
            )
        deployment.subscriber("healthy", f"{receiver.url}/ok", ["reseller.user.updated"])
        deployment.start_worker("--concurrency=4")
        try:
            created = [
                publisher.user_created({**sample_user(), "id": f"usr_{i}"}) for i in range(4)
            ]
            wait_until(
                lambda: held.in_flight >= 3 and rdb.llen(keys.queue) == 0,
                timeout_s=30,
                what="the slow subscribers holding threads, their triggers taken",
            )
            updated = [
                publisher.user_updated({**sample_user(), "id": f"usr_{i}"}) for i in range(5)
            ]
            wait_until(
                lambda: (
                    {r.headers["webhook-id"] for r in receiver.received if r.path == "/ok"}
                    >= set(updated)
                ),
                timeout_s=10,
                what="the healthy subscriber's events while the slow ones hold requests",
            )
            assert held.in_flight >= 3
            assert not held.release.is_set()
        finally:
            held.release.set()
        wait_until(
            lambda: sum(1 for r in receiver.received if r.path.startswith("/slow")) >= 8,
            what="every event at both slow subscribers once released",
        )
    by_slow = {
        (r.headers["webhook-id"], r.path) for r in receiver.received if r.path.startswith("/slow")
    }
    assert by_slow == {(e, f"/{s}") for e in created for s in ("slow-a", "slow-b")}
