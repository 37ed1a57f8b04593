"""Per-user ordering and coalescing, end to end: real Redis, real worker, real receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import Deployment, attempt_log, settled, wait_until


def user(user_id: str, company: str) -> dict[str, Any]:
    return {**sample_user(), "id": user_id, "company": company}


def accepted(receiver: Receiver, path: str = "/s") -> list[tuple[str, str, str]]:
    """(user id, event type, company) of what the subscriber answered 2xx to, in order."""
    return [
        (r.json["data"]["id"], r.json["event"], r.json["data"]["company"])
        for r in receiver.received
        if r.path == path and r.headers.get("x-answered") == "200"
    ]


def answering(decide: Callable[[Received], int]) -> Callable[[Received], Reply]:
    """A responder that notes its answer in the recorded request (to read it back in order)."""

    def respond(item: Received) -> Reply:
        status = decide(item)
        item.headers["x-answered"] = str(status)
        return Reply(status)

    return respond


def test_a_users_changes_arrive_in_publish_order_across_a_retry(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    """A's created fails once; A's updates wait behind its retry; B is not held up."""
    failed: list[str] = []

    def fail_a_created_once(item: Received) -> int:
        if item.json["data"]["id"] == "usr_a" and not failed:
            failed.append(item.headers["webhook-id"])
            return 503
        return 200

    receiver.respond = answering(fail_a_created_once)
    deployment.subscriber("s", f"{receiver.url}/s", retry={"schedule_s": [0, 1.5], "jitter": 0})
    deployment.start_worker()
    publisher.user_created(user("usr_a", "v1"))
    wait_until(lambda: failed, what="A's created refused once")
    publisher.user_updated(user("usr_a", "v2"))
    publisher.user_updated(user("usr_a", "v3"))
    publisher.user_created(user("usr_b", "b1"))
    publisher.user_updated(user("usr_b", "b2"))

    wait_until(lambda: len(accepted(receiver)) == 5, what="every change delivered")
    order = accepted(receiver)
    assert [c for u, _, c in order if u == "usr_a"] == ["v1", "v2", "v3"]
    assert [c for u, _, c in order if u == "usr_b"] == ["b1", "b2"]
    # B's changes went while A's created was waiting for its retry.
    assert [u for u, _, _ in order][:2] == ["usr_b", "usr_b"]
    wait_until(lambda: settled(rdb, keys), what="nothing left pending")
    assert not list(rdb.scan_iter(match=keys.chain("s", "*")))


def test_ordering_none_lets_later_changes_overtake_a_retry(
    deployment: Deployment, receiver: Receiver, publisher: Publisher
) -> None:
    failed: list[str] = []

    def fail_first(item: Received) -> int:
        if not failed:
            failed.append(item.headers["webhook-id"])
            return 503
        return 200

    receiver.respond = answering(fail_first)
    deployment.subscriber(
        "s", f"{receiver.url}/s", retry={"schedule_s": [0, 1.5], "jitter": 0}, ordering="none"
    )
    deployment.start_worker()
    publisher.user_created(user("usr_a", "v1"))
    wait_until(lambda: failed, what="the created refused once")
    publisher.user_updated(user("usr_a", "v2"))
    wait_until(lambda: len(accepted(receiver)) == 2, what="both delivered")
    assert [c for _, _, c in accepted(receiver)] == ["v2", "v1"]


def test_coalescing_sends_a_recovering_subscriber_each_users_latest_state(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    up = threading.Event()
    receiver.respond = answering(lambda _item: 200 if up.is_set() else 503)
    deployment.subscriber(
        "s",
        f"{receiver.url}/s",
        coalesce=True,
        retry={"schedule_s": [0, 1, 1, 1, 1, 1, 1, 1, 1, 1], "jitter": 0},
    )
    deployment.start_worker()
    created_a = publisher.user_created(user("usr_a", "v1"))
    wait_until(lambda: receiver.received, what="A's created refused")
    updates_a = [publisher.user_updated(user("usr_a", f"v{n}")) for n in range(2, 7)]
    # B's first update fails and waits; a newer update takes its place in the schedule.
    first_b = publisher.user_updated(user("usr_b", "b1"))
    wait_until(
        lambda: any(r.headers["webhook-id"] == first_b for r in receiver.received),
        what="B's first update refused",
    )
    last_b = publisher.user_updated(user("usr_b", "b2"))
    up.set()

    wait_until(lambda: len(accepted(receiver)) == 3, timeout_s=20, what="latest states sent")
    wait_until(lambda: settled(rdb, keys), what="nothing left pending")
    order = accepted(receiver)
    assert [(u, c) for u, _, c in order if u == "usr_a"] == [("usr_a", "v1"), ("usr_a", "v6")]
    assert [(u, c) for u, _, c in order if u == "usr_b"] == [("usr_b", "b2")]
    # Superseded updates were never sent, and are not dead letters: the log says why.
    sent = {r.headers["webhook-id"] for r in receiver.received}
    assert sent == {created_a, updates_a[-1], first_b, last_b}
    assert rdb.zcard(keys.dead) == 0
    for event_id in [*updates_a[:-1], first_b]:
        record = rdb.hgetall(keys.delivery(f"{event_id}:s"))
        assert record[b"state"] == b"superseded"
        log = attempt_log(rdb, keys, f"{event_id}:s")
        assert log[-1]["outcome"] == "superseded"
    # B's newer update inherited the superseded one's place in the schedule: it was not sent
    # at once (the subscriber was still down) but at that retry time.
    assert json.loads(rdb.lindex(keys.attempts(f"{last_b}:s"), -1) or b"{}")["attempt"] == 2


def test_a_created_is_never_superseded_by_an_update(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    up = threading.Event()
    receiver.respond = answering(lambda _item: 200 if up.is_set() else 503)
    deployment.subscriber(
        "s", f"{receiver.url}/s", coalesce=True, retry={"schedule_s": [0, 1, 1, 1], "jitter": 0}
    )
    deployment.start_worker()
    publisher.user_created(user("usr_a", "v1"))
    wait_until(lambda: receiver.received, what="the created refused")
    publisher.user_created(user("usr_a", "again"))  # a second created is kept too
    publisher.user_updated(user("usr_a", "v2"))
    up.set()
    wait_until(lambda: len(accepted(receiver)) == 3, what="both createds and the update sent")
    assert [(e, c) for _, e, c in accepted(receiver)] == [
        ("reseller.user.created", "v1"),
        ("reseller.user.created", "again"),
        ("reseller.user.updated", "v2"),
    ]
