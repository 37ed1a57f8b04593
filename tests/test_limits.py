"""Rate limits per subscriber and 429s, end to end: real workers, a real Redis, a loopback
receiver that counts what arrives (docs/endpoint-health.md, "Rate limits and 429")."""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from datetime import datetime

import httpx
import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.records.shapes import delivery_id
from tests.helpers import Deployment, attempt_log, publish_burst, report, settled, wait_until

CONSOLE_TOKEN = "limits-console-token-" + "x" * 24

#: Many quick retries: a throttled delivery deferred enough retries soon, and never dies here.
QUICK = {"schedule_s": [0] + [0.2] * 15, "jitter": 0}


def dlv(item: Received) -> str:
    """The delivery a request to subscriber ``s`` carried."""
    return delivery_id(item.headers["webhook-id"], "s")


def most_in_any_second(times: list[float]) -> int:
    """The most arrivals in any sliding one-second window."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


class Capacity:
    """A receiver that takes ``per_s`` requests in any sliding second and answers 429 (no
    Retry-After) to the rest, as a rate-limited API does; notes every answer."""

    def __init__(self, per_s: int) -> None:
        self.per_s = per_s
        self.accepted: deque[float] = deque()
        self.answers: list[tuple[float, str, int]] = []  # (at, webhook-id, status)
        self.lock = threading.Lock()

    def __call__(self, item: Received) -> Reply:
        with self.lock:
            while self.accepted and item.at - self.accepted[0] >= 1.0:
                self.accepted.popleft()
            status = 429 if len(self.accepted) >= self.per_s else 200
            if status == 200:
                self.accepted.append(item.at)
            self.answers.append((item.at, item.headers["webhook-id"], status))
            return Reply(status)

    def delivered(self) -> Counter[str]:
        with self.lock:
            return Counter(eid for _, eid, status in self.answers if status == 200)


@pytest.mark.slow
def test_rate_limit_holds_across_two_workers(
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber(
        "s", f"{receiver.url}/s", ordering="none", rate_limit_per_s=20, rate_burst=5
    )
    deployment.start_worker()
    deployment.start_worker()
    # Connections opened first, so that no arrival is late by a connection's setup.
    ids = publish_burst(publisher, 5)
    receiver.wait_for(5)
    ids += publish_burst(publisher, 45, start=5)

    receiver.wait_for(50, timeout_s=20)
    wait_until(lambda: settled(rdb, keys), what="deliveries finished")
    times = [r.at for r in receiver.received]
    most = most_in_any_second(times)
    # The bucket bounds what is sent: at most 5 + 20 x L in any L seconds. At the receiver a
    # window of 1 s can also hold what was sent up to one send -> arrival lag before it: the
    # allowance is what that lag (measured, from each attempt's start in its log) lets through.
    lag_s = max(
        r.at - datetime.fromisoformat(attempt_log(rdb, keys, dlv(r))[-1]["at"]).timestamp()
        for r in receiver.received
    )
    allowance = math.ceil(20 * max(lag_s, 0.0))
    report("rate limit 20/s burst 5, two workers", most_in_any_second=most, lag_s=lag_s)
    assert most <= 20 + 5 + allowance
    assert Counter(r.headers["webhook-id"] for r in receiver.received) == Counter(ids)
    assert rdb.zcard(keys.dead) == 0


@pytest.mark.slow
def test_429s_above_30_per_s_converge_near_30_and_lose_nothing(
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    capacity = Capacity(30)
    receiver.respond = capacity
    deployment.subscriber("s", f"{receiver.url}/s", ordering="none", retry=QUICK)
    deployment.start_worker()
    ids = publish_burst(publisher, 120)

    wait_until(lambda: len(capacity.delivered()) == 120, timeout_s=30, what="all accepted")
    wait_until(lambda: settled(rdb, keys), what="deliveries finished")
    assert capacity.delivered() == Counter(ids)  # every event once
    assert rdb.zcard(keys.dead) == 0
    times = sorted(at for at, _, _ in capacity.answers)
    last = [a for a in capacity.answers if a[0] >= times[-1] - 3.0]  # the last 3 s
    refused = sum(1 for a in last if a[2] == 429)
    report(
        "429 above 30/s",
        attempts=len(times),
        seconds=round(times[-1] - times[0], 1),
        last_3s_attempts=len(last),
        last_3s_refused=refused,
    )
    # Converged: in the last seconds the workers send about what the receiver takes, instead
    # of the hundreds per second they send an endpoint that takes everything.
    assert len(last) <= 3 * 30 * 1.5
    assert refused <= len(last) // 3
    status = deployment.cli("subscribers", "status")
    assert "lowered by 429s; configured none" in status.stdout, status.stdout
    _, url = deployment.start_console(
        WEBHOOKS_CONSOLE_USER="ops",
        WEBHOOKS_CONSOLE_PASSWORD="a-long-console-password",
        WEBHOOKS_CONSOLE_TOKEN=CONSOLE_TOKEN,
    )
    page = httpx.get(
        f"{url}/subscribers/s", headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"}, timeout=30
    )
    assert "lowered by 429s; configured none" in page.text


@pytest.mark.slow
def test_retry_after_pauses_the_whole_subscriber(
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    statuses: list[int] = []

    def respond(item: Received) -> Reply:
        statuses.append(200 if statuses else 429)
        return Reply(statuses[-1], headers={"Retry-After": "1"})

    receiver.respond = respond
    deployment.subscriber("s", f"{receiver.url}/s", ordering="none")
    deployment.start_worker()
    (first,) = publish_burst(publisher, 1)
    receiver.wait_for(1)
    wait_until(lambda: attempt_log(rdb, keys, f"{first}:s"), what="the 429 recorded")
    later = [publisher.user_created({**sample_user(), "id": f"usr_more_{k}"}) for k in range(5)]

    got = receiver.wait_for(7)
    wait_until(lambda: settled(rdb, keys), what="deliveries finished")
    assert len(got) == 7
    throttled_at = got[0].at
    assert all(r.at >= throttled_at + 1.0 for r in got[1:])  # no attempt during the pause
    assert Counter(r.headers["webhook-id"] for r in got[1:]) == Counter([first, *later])
    log = attempt_log(rdb, keys, f"{first}:s")
    # The throttled attempt is logged, but not counted: the next one is attempt 1 again.
    assert [(a["attempt"], a["status"], a["outcome"]) for a in log] == [
        (1, 429, "throttled"),
        (1, 200, "delivered"),
    ]
