"""``webhook-sequence``: each user's events numbered at publish, the number the same for every
subscriber and on every attempt, retry and replay; events recorded before numbering have none."""

from __future__ import annotations

from collections import defaultdict

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher, celery_client
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver, Reply
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.queue.triggers import send_deliver
from reseller_webhooks.worker.records.deadletters import DeadLetters
from reseller_webhooks.worker.records.store import Store
from tests.helpers import Deployment, wait_until

BODY_FIELDS = {"event", "data", "triggeredAt"}


def change(user_id: str, n: int) -> tuple[str, dict[str, object]]:
    event = "reseller.user.created" if n == 0 else "reseller.user.updated"
    return event, {**sample_user(), "id": user_id, "company": f"v{n}"}


def test_numbers_count_per_user_and_an_idempotent_repeat_takes_none(
    publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    first = publisher.publish_batch([change("usr_a", 0), change("usr_b", 0), change("usr_a", 1)])
    again = publisher.publish(*change("usr_a", 2), idempotency_key="k-1")
    assert publisher.publish(*change("usr_a", 2), idempotency_key="k-1") == again
    numbers = [rdb.hget(keys.event(i), "seq") for i in [*first, again]]
    assert numbers == [b"1", b"1", b"2", b"3"]
    assert rdb.get(keys.sequence("usr_a")) == b"3"
    assert rdb.ttl(keys.sequence("usr_a")) == -1  # never expires: a number is never reused


@pytest.mark.slow
def test_every_subscriber_attempt_and_replay_carries_the_events_number(
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    store: Store,
    redis_url: str,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    """Two users' changes interleaved, to three subscribers: ``a`` refuses its first request
    once (a retry), ``c`` refuses one event for good (a dead letter, replayed after its event
    record expired). An event recorded before numbering (its ``seq`` removed, as a record
    written by the previous version has none) is delivered without the header."""
    deployment.subscriber("a", f"{receiver.url}/a", retry={"schedule_s": [0, 0.2], "jitter": 0})
    deployment.subscriber("b", f"{receiver.url}/b")
    deployment.subscriber("c", f"{receiver.url}/c", retry={"schedule_s": [0]})
    items = [change(user, n) for n in range(3) for user in ("usr_x", "usr_y")]
    ids = publisher.publish_batch(items)
    old = publisher.publish(*change("usr_old", 0))
    rdb.hdel(keys.event(old), "seq")
    refuse = {("/a", ids[0]): Reply(503), ("/c", ids[2]): Reply(500)}  # usr_x's first, second
    receiver.respond = lambda item: refuse.pop((item.path, item.headers["webhook-id"]), Reply())
    deployment.start_worker()

    receiver.wait_for(3 * (len(ids) + 1) + 1, timeout_s=30)  # every event, one retry
    wait_until(lambda: rdb.zcard(keys.dead) == 1, what="c's delivery of usr_x's second dead")
    rdb.delete(keys.event(ids[2]))  # its event record expired meanwhile
    replayed, triggers = DeadLetters(store, event_ttl_s=60).replay([f"{ids[2]}:c"])
    assert replayed == [f"{ids[2]}:c"]
    send_deliver(celery_client(ProducerSettings(redis_url=redis_url)), keys, triggers)
    received = receiver.wait_for(3 * (len(ids) + 1) + 2, timeout_s=30)

    numbers: dict[str, set[str | None]] = defaultdict(set)
    for item in received:
        assert set(item.json) == BODY_FIELDS
        numbers[item.headers["webhook-id"]].add(item.headers.get("webhook-sequence"))
    expected = {ids[2 * n + u]: {str(n + 1)} for n in range(3) for u in range(2)}
    assert numbers == {**expected, old: {None}}
    to_a = [r.headers.get("webhook-sequence") for r in received if r.path == "/a"]
    to_c = [r.headers.get("webhook-sequence") for r in received if r.path == "/c"]
    assert to_a.count("1") == 3  # usr_x's first twice (refused, then its retry), usr_y's once
    assert to_c[-1] == "2"  # the replay: older than usr_x's 3, so a receiver ignores it
