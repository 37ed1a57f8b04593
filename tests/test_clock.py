"""Workers whose clocks are off by minutes (libfaketime): retries are not sent early or late, and
leases are not cut short, because every time the records use is the Redis server's."""

from __future__ import annotations

import glob
import time
from collections import Counter

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import IN_CI, Deployment, settled, wait_until

pytestmark = pytest.mark.slow

LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")), None)
if LIBFAKETIME is None:
    if IN_CI:
        raise RuntimeError("CI=true and libfaketime is missing (Debian package faketime)")
    pytest.skip("libfaketime is not installed (Debian package faketime)", allow_module_level=True)

SKEW_S = 300


def skewed(offset: str) -> dict[str, str]:
    """Environment that runs a process with its wall clock moved by ``offset`` (monotonic
    clocks stay true, as NTP would leave them)."""
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
    }


@pytest.mark.parametrize("offset", [f"+{SKEW_S}s", f"-{SKEW_S}s"])
def test_a_skewed_worker_sends_a_retry_on_time(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, offset: str
) -> None:
    seen: list[str] = []
    receiver.respond = lambda item: Reply(200 if item.headers["webhook-id"] in seen else 503)
    receiver._on_receive = lambda item: seen.append(item.headers["webhook-id"])
    deployment.subscriber("s", f"{receiver.url}/s", retry={"schedule_s": [0, 3], "jitter": 0})
    deployment.settings.update(skewed(offset))
    deployment.start_worker()
    publisher.user_created(sample_user())
    first, retry = receiver.wait_for(2, timeout_s=20)[:2]
    # The worker's clock really is off (it dates the signature) ...
    skew = int(first.headers["webhook-timestamp"]) - first.at
    assert abs(abs(skew) - SKEW_S) < 5
    # ... but the retry came 3 s after the first attempt, by the receiver's (true) clock.
    assert 2.9 <= retry.at - first.at <= 4.5


def test_a_worker_behind_by_minutes_does_not_lose_its_leases(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    """A worker whose clock is 5 minutes behind claims deliveries next to a true one: were
    leases on its clock, the other worker's scheduler would take them back at once and send
    them again."""

    def slow(_item: Received) -> Reply:
        time.sleep(0.3)
        return Reply(200)

    receiver.respond = slow
    deployment.subscriber("s", f"{receiver.url}/s", timeout_s=3)
    deployment.start_worker()
    deployment.settings.update(skewed(f"-{SKEW_S}s"))
    deployment.start_worker()
    ids = [publisher.user_created({**sample_user(), "id": f"usr_{i}"}) for i in range(30)]
    wait_until(lambda: len(receiver.received) >= len(ids), timeout_s=60, what="all delivered")
    wait_until(lambda: settled(rdb, keys), timeout_s=30, what="nothing left pending")
    counts = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
