"""The circuit breaker end to end: real workers, a real receiver that goes down and comes back,
the schedule scaled so minutes run in seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.ops.deployment_metrics import StatsReader
from reseller_webhooks.worker.records.store import Store
from tests.helpers import Deployment, Script, publish_burst, report, wait_until
from tests.test_console import TOKEN

#: 5 s probes are 50 ms, the 5 min longest interval 3 s; the 300 s retry 3 s, the 1800 s one 18 s.
SCALE = "0.01"


def breaker(rdb: redis.Redis, keys: Keys, sub: str = "s") -> str:
    return (rdb.hget(keys.subscriber_state(sub), "breaker") or b"closed").decode()


def ids_delivered(receiver: Receiver, path: str = "/s") -> set[str]:
    return {r.headers["webhook-id"] for r in receiver.received if r.path == path}


@pytest.mark.slow
def test_a_down_endpoint_gets_a_few_probes_and_its_backlog_at_once_when_back(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.settings["WEBHOOKS_SCHEDULE_SCALE"] = SCALE
    deployment.subscriber("s", f"{receiver.url}/s")
    script.always("/s", Reply(503))
    deployment.start_worker()
    ids = publish_burst(publisher, 300, batch=20)

    wait_until(lambda: breaker(rdb, keys) == "open", what="the breaker opened")
    at_open = len(receiver.received)
    # The outage goes on: six probes at growing intervals (0.05 s to 1.6 s: over 3 s), while
    # the deliveries attempted so far are parked on their 300 s (3 s) and 1800 s (18 s) retries.
    wait_until(lambda: len(receiver.received) >= at_open + 6, timeout_s=30, what="six probes")
    during = len(receiver.received)
    assert during <= 40, f"{during} attempts against the down endpoint"
    assert all(r.path == "/s" for r in receiver.received)

    script.always("/s", Reply(200))
    back = time.monotonic()
    wait_until(lambda: ids_delivered(receiver) >= set(ids), timeout_s=60, what="backlog delivered")
    drained_s = time.monotonic() - back
    report("breaker outage", events=300, attempts_while_down=during, drained_s=f"{drained_s:.1f}")
    # Without the breaker the backlog waits for the parked retries (18 s at this scale).
    assert drained_s < 12
    assert breaker(rdb, keys) == "closed"
    assert rdb.hget(keys.subscriber_state("s"), "failing_since") is None


class Endpoint:
    """A receiver's behaviour: down (503) or up (200); the next probe may be held in flight until
    released; counts the requests in flight at once."""

    def __init__(self, rdb: redis.Redis, keys: Keys, slow_s: float = 0.0) -> None:
        self.rdb, self.keys, self.slow_s = rdb, keys, slow_s
        self.up = threading.Event()
        self.hold_next = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.arrivals: list[float] = []

    def __call__(self, item: Received) -> Reply:
        self.arrivals.append(time.time())
        if self.hold_next.is_set() and self.rdb.hexists(
            self.keys.subscriber_state("s"), "probe_lease"
        ):
            self.hold_next.clear()
            self.holding.set()
            self.release.wait(30)
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.slow_s and not self.up.is_set():
                time.sleep(self.slow_s)  # a slow failing endpoint: the window for a second probe
            return Reply(200) if self.up.is_set() else Reply(503)
        finally:
            with self.lock:
                self.in_flight -= 1


def failing_then_burst(publisher: Publisher, rdb: redis.Redis, keys: Keys, count: int) -> list[str]:
    """One event fails first (the subscriber is failing: one attempt at a time from then on),
    then ``count`` more are published."""
    first = publish_burst(publisher, 1)
    wait_until(lambda: rdb.hexists(keys.subscriber_state("s"), "failing_since"), what="failing")
    return first + publish_burst(publisher, count)


@pytest.mark.slow
def test_a_probe_lost_with_its_worker_is_followed_by_another_after_its_lease(
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    endpoint = Endpoint(rdb, keys)
    receiver.respond = endpoint
    deployment.settings["WEBHOOKS_SCHEDULE_SCALE"] = SCALE
    deployment.subscriber("s", f"{receiver.url}/s", timeout_s=1, breaker_after=3)
    first = deployment.start_worker()
    ids = failing_then_burst(publisher, rdb, keys, 20)
    wait_until(lambda: breaker(rdb, keys) == "open", what="the breaker opened")
    endpoint.hold_next.set()
    wait_until(endpoint.holding.is_set, what="a probe in flight")
    lease_ms = int(rdb.hget(keys.subscriber_state("s"), "probe_lease") or 0)
    assert lease_ms > 0
    first.kill()  # SIGKILL: the probe's result is never recorded
    killed_at = len(endpoint.arrivals)
    endpoint.up.set()
    endpoint.release.set()
    deployment.start_worker()
    wait_until(lambda: ids_delivered(receiver) >= set(ids), timeout_s=60, what="backlog delivered")
    next_probe = endpoint.arrivals[killed_at]
    assert next_probe >= lease_ms / 1000 - 0.5  # none while the lost probe's lease held
    wait_until(lambda: breaker(rdb, keys) == "closed", what="the breaker closed")
    report("lost probe", lease_wait_s=f"{next_probe - endpoint.arrivals[killed_at - 1]:.1f}")


@pytest.mark.slow
def test_two_workers_racing_send_one_probe_at_a_time(
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    endpoint = Endpoint(rdb, keys, slow_s=0.2)
    receiver.respond = endpoint
    deployment.settings["WEBHOOKS_SCHEDULE_SCALE"] = SCALE
    deployment.subscriber("s", f"{receiver.url}/s", breaker_after=3)
    deployment.start_worker()
    deployment.start_worker()
    ids = failing_then_burst(publisher, rdb, keys, 100)
    wait_until(lambda: breaker(rdb, keys) == "open", what="the breaker opened")
    at_open = len(endpoint.arrivals)
    wait_until(lambda: len(endpoint.arrivals) >= at_open + 5, timeout_s=30, what="five probes")
    assert endpoint.most_in_flight == 1  # the failing bound, then one probe at a time
    endpoint.up.set()
    wait_until(lambda: ids_delivered(receiver) >= set(ids), timeout_s=60, what="backlog delivered")
    report("racing probes", attempts_while_down=at_open + 5)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "own-redis").start()
    yield server
    server.stop(kill=True)


@pytest.mark.slow
def test_the_breaker_stays_open_across_a_redis_restart_and_recovers(
    tmp_path: Path, own_redis: RedisServer, receiver: Receiver, keys: Keys
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    endpoint = Endpoint(client, keys)
    receiver.respond = endpoint
    deployment = Deployment(tmp_path=tmp_path, redis_url=own_redis.url)
    deployment.settings["WEBHOOKS_SCHEDULE_SCALE"] = SCALE
    deployment.subscriber("s", f"{receiver.url}/s", breaker_after=3)
    deployment.start_worker()
    try:
        with Publisher(ProducerSettings(redis_url=own_redis.url, visibility_timeout_s=3)) as pub:
            ids = publish_burst(pub, 50)
        wait_until(lambda: breaker(client, keys) == "open", what="the breaker opened")
        own_redis.stop()  # a clean restart: the append-only file has every write
        own_redis.start()
        assert breaker(client, keys) == "open"
        endpoint.up.set()
        wait_until(lambda: ids_delivered(receiver) >= set(ids), timeout_s=60, what="delivered")
        wait_until(lambda: breaker(client, keys) == "closed", what="the breaker closed")
        assert len(receiver.received) < 50 + 40  # the down endpoint got a few attempts
    finally:
        deployment.kill_all()
        client.close()


@pytest.mark.slow
def test_the_breaker_is_shown_by_status_the_console_and_the_metrics(
    deployment: Deployment, rdb: redis.Redis, keys: Keys
) -> None:
    deployment.subscriber("s", "http://127.0.0.1:9/s")
    probe_at = 4102444800000  # 2100-01-01
    rdb.hset(keys.subscriber_state("s"), mapping={"breaker": "open", "probe_at": probe_at})
    status = deployment.cli("subscribers", "status")
    assert "s  ok; breaker open (next probe 2100-01-01T00:00:00.000Z)" in status.stdout
    _, url = deployment.start_console(WEBHOOKS_CONSOLE_TOKEN=TOKEN)
    with httpx.Client(base_url=url, timeout=30) as client:
        page = client.get("/subscribers/s", headers={"Authorization": f"Bearer {TOKEN}"})
    assert "open (next probe 2100-01-01T00:00:00.000Z)" in page.text
    store = Store(rdb, keys, record_retention_s=60, dead_letter_retention_s=60, attempt_log_size=5)
    (row,) = StatsReader(store, dead_ttl_s=60).read(["s"]).subscribers
    assert row.breaker == 2
    assert row.next_probe_s > 3600 * 24 * 365
