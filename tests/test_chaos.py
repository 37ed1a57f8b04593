"""Crashes and restarts with real processes: nothing published is lost; duplicates are counted.

Run with ``-s`` to see the figures the README quotes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher, celery_client
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.queue.triggers import send_deliver
from reseller_webhooks.worker.records.deadletters import DeadLetters
from reseller_webhooks.worker.records.store import Store
from tests.helpers import (
    Deployment,
    Script,
    assert_audit_balances,
    publish_burst,
    report,
    settled,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_sigkill_during_a_burst_loses_nothing(
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    total = 3000
    deployment.subscriber("s", f"{receiver.url}/s", timeout_s=1)
    first = deployment.start_worker()
    ids = publish_burst(publisher, total)
    receiver.wait_for(total // 4, timeout_s=60)
    first.kill()  # SIGKILL: no warm shutdown, nothing acknowledged on the way out
    at_kill = len(receiver.received)
    restarted = time.monotonic()
    deployment.start_worker()

    wait_until(
        lambda: {r.headers["webhook-id"] for r in receiver.received} >= set(ids),
        timeout_s=120,
        what="every event delivered after the restart",
    )
    recovery_s = time.monotonic() - restarted
    wait_until(lambda: settled(rdb, keys), timeout_s=30, what="nothing left pending")
    assert_audit_balances(rdb, keys)
    counts = Counter(r.headers["webhook-id"] for r in receiver.received)
    duplicates = sum(c - 1 for c in counts.values())
    assert set(counts) == set(ids)
    report(
        "sigkill",
        events=total,
        delivered_before_kill=at_kill,
        lost=0,
        duplicates=duplicates,
        recovery_s=round(recovery_s, 1),
    )
    # Duplicates are bounded by what the killed worker had in flight: each of its threads holds
    # at most one claimed chunk whose results were not yet recorded.
    assert duplicates <= WorkerSettings().concurrency * WorkerSettings().deliver_chunk


@pytest.fixture
def own_redis(tmp_path: Path) -> RedisServer:
    server = RedisServer(tmp_path / "own-redis").start()
    yield server  # type: ignore[misc]
    server.stop(kill=True)


def test_redis_restart_with_retries_pending_loses_nothing(
    tmp_path: Path, own_redis: RedisServer, receiver: Receiver, keys: Keys
) -> None:
    total = 300
    down = threading.Event()
    down.set()
    receiver.respond = lambda _item: Reply(503) if down.is_set() else Reply(200)
    deployment = Deployment(tmp_path=tmp_path, redis_url=own_redis.url)
    deployment.subscriber(  # every delivery's own retry pending: a breaker that never opens
        "s", f"{receiver.url}/s", retry={"schedule_s": [0, 4], "jitter": 0}, breaker_after=10**6
    )
    deployment.start_worker()
    client = redis.Redis.from_url(own_redis.url)
    try:
        with Publisher(ProducerSettings(redis_url=own_redis.url, visibility_timeout_s=3)) as pub:
            ids = publish_burst(pub, total)
        receiver.wait_for(total, timeout_s=60)
        wait_until(lambda: client.zcard(keys.due) == total, what="every retry pending")
        time.sleep(1.2)  # appendfsync everysec: let the last second reach the disk
        own_redis.stop(kill=True)  # a crash, not a clean shutdown
        own_redis.start()
        down.clear()
        wait_until(
            lambda: (
                {r.headers["webhook-id"] for r in receiver.received if r.at and not down.is_set()}
                >= set(ids)
                and len(receiver.received) >= 2 * total
            ),
            timeout_s=90,
            what="every retry delivered after the Redis restart",
        )
        wait_until(lambda: settled(client, keys), timeout_s=30, what="nothing left pending")
        assert_audit_balances(client, keys)
        counts = Counter(r.headers["webhook-id"] for r in receiver.received)
        assert set(counts) == set(ids)
        report(
            "redis-restart", events=total, lost=0, duplicates=sum(c - 2 for c in counts.values())
        )
    finally:
        deployment.kill_all()
        client.close()


def test_two_schedulers_never_send_a_retry_twice(
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    total = 400
    seen: set[str] = set()
    lock = threading.Lock()

    def first_fails(item: Received) -> Reply:
        with lock:
            known = item.headers["webhook-id"] in seen
            seen.add(item.headers["webhook-id"])
        return Reply(200) if known else Reply(503)

    receiver.respond = first_fails
    deployment.settings["WEBHOOKS_EMBEDDED_SCHEDULER"] = "false"
    deployment.subscriber(  # every delivery retried on its own: a breaker that never opens
        "s", f"{receiver.url}/s", retry={"schedule_s": [0, 0.5], "jitter": 0.5}, breaker_after=10**6
    )
    deployment.start_scheduler()
    deployment.start_scheduler()
    deployment.start_worker()
    ids = publish_burst(publisher, total)
    receiver.wait_for(2 * total, timeout_s=60)
    wait_until(lambda: settled(rdb, keys), what="nothing left pending")
    assert_audit_balances(rdb, keys)
    counts = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {2}  # one failure, one retry: never a retry sent twice
    report("two-schedulers", events=total, retries=total, duplicate_retries=0)


def test_retries_do_not_starve_first_attempts(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    """A dead subscriber's retry backlog does not hold up a fresh delivery to a healthy one.

    Two threads, one delivery per message, a subscriber that always times out (0.3 s): its
    retries keep both threads busy for about half a minute. Sharing one FIFO queue, a new event
    would wait behind the whole backlog (over 6 s); on its own queue it is taken next.
    """
    backlog = 40
    deployment.settings["WEBHOOKS_DELIVER_CHUNK"] = "1"
    deployment.subscriber(
        "dead",
        f"{receiver.url}/dead",
        ["reseller.user.created"],
        timeout_s=0.3,
        retry={"schedule_s": [0] + [0.05] * 5, "jitter": 0},
        breaker_after=10**6,  # a retry backlog, not probes: a breaker that never opens
    )
    deployment.subscriber("healthy", f"{receiver.url}/healthy", ["reseller.user.updated"])
    script.always("/dead", Reply(200, delay_s=2))
    deployment.start_worker("--concurrency", "2")
    publish_burst(publisher, backlog, batch=backlog)
    wait_until(
        lambda: sum(r.path == "/dead" for r in receiver.received) >= backlog + 4,
        timeout_s=30,
        what="every first attempt made and retries under way",
    )
    started = time.monotonic()
    healthy = publisher.user_updated(sample_user())
    wait_until(
        lambda: any(r.headers["webhook-id"] == healthy for r in receiver.received),
        timeout_s=3,
        what="the healthy subscriber served ahead of the retry backlog",
    )
    report(
        "starvation",
        backlog_s=round(backlog * 5 * 0.3 / 2),
        healthy_latency_s=round(time.monotonic() - started, 2),
    )
    assert_audit_balances(rdb, keys)  # with retries under way: it balances at any moment


def test_per_user_order_holds_through_a_sigkill_and_a_failing_first_event(
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    """200 users, five changes each, published interleaved; one user's first event is refused
    once while the others flow, and the worker is SIGKILLed mid-way. Every user's changes
    first arrive in publish order (a re-sent one repeats itself, never overtakes)."""
    users, changes = 200, 5
    refused: list[str] = []
    lock = threading.Lock()

    def refuse_once(item: Received) -> Reply:
        with lock:
            if item.json["data"]["id"] == "usr_7" and not refused:
                refused.append(item.headers["webhook-id"])
                return Reply(503)
        return Reply(200)

    receiver.respond = refuse_once
    deployment.subscriber("s", f"{receiver.url}/s", timeout_s=1, retry={"schedule_s": [0, 1]})
    first = deployment.start_worker()
    user = sample_user()
    order: dict[str, list[str]] = {}
    for n in range(changes):
        event = "reseller.user.created" if n == 0 else "reseller.user.updated"
        items = [(event, {**user, "id": f"usr_{u}", "company": f"v{n}"}) for u in range(users)]
        for (_, data), event_id in zip(items, publisher.publish_batch(items), strict=True):
            order.setdefault(data["id"], []).append(event_id)
    receiver.wait_for(users * changes // 3, timeout_s=60)
    first.kill()
    deployment.start_worker()
    everything = {i for ids in order.values() for i in ids}
    wait_until(
        lambda: {r.headers["webhook-id"] for r in receiver.received} >= everything,
        timeout_s=120,
        what="every change delivered after the restart",
    )
    wait_until(lambda: settled(rdb, keys), timeout_s=30, what="nothing left pending")
    assert_audit_balances(rdb, keys)
    arrived: dict[str, list[str]] = {}
    for r in receiver.received:
        seen = arrived.setdefault(r.json["data"]["id"], [])
        if r.headers["webhook-id"] not in seen:
            seen.append(r.headers["webhook-id"])
    assert refused
    assert arrived == order
    duplicates = len(receiver.received) - len(everything) - len(refused)
    report("ordering-sigkill", users=users, changes=users * changes, duplicates=duplicates)


def test_a_receiver_applying_only_higher_sequence_numbers_ends_with_every_latest_state(
    tmp_path: Path, own_redis: RedisServer, receiver: Receiver, keys: Keys
) -> None:
    """The receiver's rule (``webhook-sequence``): apply a state only when its number is higher
    than the last one applied for that user. Through a worker SIGKILLed mid-delivery (repeats),
    a Redis crash and restart from its append-only file, and a dead letter replayed after the
    user's later changes (an old state, late), it ends with every user's latest state."""
    users, changes = 100, 5
    applied: dict[str, tuple[int, str]] = {}
    lock = threading.Lock()
    # This change is refused at every attempt (a repeat after the SIGKILL included) until it is
    # dead-lettered, then accepted when replayed at the end.
    doomed = ("usr_3", "v1")
    refusing = threading.Event()
    refusing.set()

    def apply_if_newer(item: Received) -> Reply:
        data, number = item.json["data"], int(item.headers["webhook-sequence"])
        with lock:
            if refusing.is_set() and (data["id"], data["company"]) == doomed:
                return Reply(500)
            if number > applied.get(data["id"], (0, ""))[0]:
                applied[data["id"]] = (number, data["company"])
        return Reply(200)

    receiver.respond = apply_if_newer
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("appendfsync", "always")  # every write on disk before the crash
    deployment = Deployment(tmp_path=tmp_path, redis_url=own_redis.url)
    deployment.subscriber("s", f"{receiver.url}/s", timeout_s=1, retry={"schedule_s": [0]})
    first = deployment.start_worker()
    user = sample_user()
    try:
        with Publisher(ProducerSettings(redis_url=own_redis.url, visibility_timeout_s=3)) as pub:
            for n in range(changes):
                event = "reseller.user.created" if n == 0 else "reseller.user.updated"
                pub.publish_batch(
                    [(event, {**user, "id": f"usr_{u}", "company": f"v{n}"}) for u in range(users)]
                )
        receiver.wait_for(users * changes // 3, timeout_s=60)
        first.kill()
        own_redis.stop(kill=True)
        own_redis.start()
        deployment.start_worker()
        wait_until(
            lambda: client.zcard(keys.dead) == 1 and settled(client, keys),
            timeout_s=60,  # ~10 s; within the test's own time limit, so a failure says what
            what="every change delivered or dead after the restarts",
        )
        latest = {f"usr_{u}": (changes, f"v{changes - 1}") for u in range(users)}
        assert applied == latest
        store = Store(
            client, keys, record_retention_s=60, dead_letter_retention_s=60, attempt_log_size=5
        )
        dead = DeadLetters(store, event_ttl_s=60)
        refusing.clear()
        replayed, triggers = dead.replay([d.delivery_id for d in dead.find()])
        assert len(replayed) == 1
        send_deliver(celery_client(ProducerSettings(redis_url=own_redis.url)), keys, triggers)
        wait_until(
            lambda: client.zcard(keys.dead) == 0 and settled(client, keys),
            timeout_s=30,
            what="the replay delivered",
        )
        last = [r for r in receiver.received if r.json["data"]["id"] == "usr_3"][-1]
        assert (last.json["data"]["company"], last.headers["webhook-sequence"]) == ("v1", "2")
        assert applied == latest  # the late old state was not applied
        numbers: dict[str, set[str]] = {}
        for r in receiver.received:  # repeats and the replay carry their event's number
            numbers.setdefault(r.headers["webhook-id"], set()).add(r.headers["webhook-sequence"])
        assert len(numbers) == users * changes
        assert all(len(n) == 1 for n in numbers.values())
        report(
            "sequence-chaos", users=users, changes=users * changes, received=len(receiver.received)
        )
    finally:
        deployment.kill_all()
        client.close()
