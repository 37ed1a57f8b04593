"""Lingering triggers wait for a wake-up instead of polling (worker.delivery.wake): what the
scripts publish and to whom, that a wake-up cannot slip between the drain (claim) that saw
nothing and the wait, and that the linger ends with the same atomic disarm as before. Real
Redis, no worker process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.delivery.wake import DISPATCH, Linger, Wakeups, seats, slot_name
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.records.shapes import Finish
from reseller_webhooks.worker.records.store import Store
from tests.helpers import ROUTES, wait_until

#: A linger that would outlast the test: a wait that returns was woken.
LONG_S = 60.0


@pytest.fixture
def wakeups(rdb: redis.Redis, keys: Keys) -> Iterator[Wakeups]:
    listening = Wakeups(rdb, keys.wake, seats=4)
    listening.start()
    wait_until(lambda: listening.live, what="the listener subscribed")
    yield listening
    listening.close()


def waiting(linger: Linger) -> Callable[[], Any]:
    """Start ``linger.wait()`` in a thread; the returned call joins it (bounded) and gives its
    result: True if it was woken."""
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(linger.wait()), daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(timeout=15)
        assert not thread.is_alive(), "the wait was not woken"
        return result[0]

    return join


def finish_delivered() -> Finish:
    return Finish("delivered", {"outcome": "delivered"}, disable_after_ms=10**9)


def publish(publisher: Publisher, user_id: str = "usr_1") -> str:
    return publisher.user_created({**sample_user(), "id": user_id})


def channel_messages(rdb: redis.Redis, keys: Keys, act: Callable[[], None]) -> list[bytes]:
    """What was published on the wake channel while ``act`` ran (an end mark, published after
    it, bounds the read: no waiting for messages that should not come)."""
    pubsub = rdb.pubsub()
    pubsub.subscribe(keys.wake)
    confirmed = wait_until(lambda: pubsub.get_message(timeout=1.0), what="the subscription")
    assert confirmed["type"] == "subscribe"
    act()
    rdb.publish(keys.wake, b"end of test")
    seen: list[bytes] = []
    while True:
        message = wait_until(lambda: pubsub.get_message(timeout=1.0), what="the end mark")
        if message["data"] == b"end of test":
            pubsub.close()
            return seen
        seen.append(message["data"])


def test_a_publish_wakes_the_lingering_dispatch_task_and_sends_no_message(
    store: Store, publisher: Publisher, wakeups: Wakeups, rdb: redis.Redis, keys: Keys
) -> None:
    publish(publisher)  # arms the dispatch trigger: one message queued
    with wakeups.linger(DISPATCH, seconds=LONG_S) as linger:
        assert linger.keep()
        assert store.drain(ROUTES, batch=100, now_iso="x", keep_armed=True).events == 1
        assert rdb.exists(keys.dispatch_armed)  # kept: the task lingers ...
        assert rdb.exists(keys.dispatch_waiting)  # ... and waits for a wake-up
        woken = waiting(linger)
        second = publish(publisher, "usr_2")
        assert woken() is True
        assert linger.keep()
        drained = store.drain(ROUTES, batch=100, now_iso="x", keep_armed=True)
    assert drained.events == 1
    assert rdb.lrange(keys.ready("s"), -1, -1) == [f"{second}:s".encode()]
    assert rdb.llen(keys.queue) == 1  # the second event needed no trigger of its own


def test_a_wake_up_published_before_the_wait_begins_is_not_missed(
    store: Store, publisher: Publisher, wakeups: Wakeups
) -> None:
    publish(publisher)
    with wakeups.linger(DISPATCH, seconds=LONG_S) as linger:
        assert linger.keep()  # clears the wake-up before the drain looks
        store.drain(ROUTES, batch=100, now_iso="x", keep_armed=True)
        publish(publisher, "usr_2")  # between the drain that saw the list empty and the wait
        wait_until(lambda: linger._event.is_set(), what="the wake-up delivered")
        assert linger.wait() is True  # returns at once: the wake-up is kept, not lost


def test_only_a_waiting_task_costs_a_publication(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    publish(publisher)  # armed, its task not started yet

    def busy() -> None:
        for n in range(3):
            publish(publisher, f"usr_{n}")

    assert channel_messages(rdb, keys, busy) == []
    store.drain(ROUTES, batch=100, now_iso="x", keep_armed=True)  # now it waits

    def waited() -> None:
        for n in range(3):
            publish(publisher, f"usr_{n + 3}")

    assert channel_messages(rdb, keys, waited) == [b"dispatch"]  # one, for three events


def test_the_last_drain_after_the_linger_disarms_and_the_next_publish_triggers(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    publish(publisher)
    unstarted = Wakeups(rdb, keys.wake, seats=4)  # no listener: waits are short polls
    with unstarted.linger(DISPATCH, seconds=0.0) as linger:
        assert linger.keep()
        assert store.drain(ROUTES, batch=100, now_iso="x", keep_armed=True).events == 1
        assert linger.wait() is False  # the linger is over at once
        assert not linger.keep()  # so the next drain disarms in the step that sees it empty
        drained = store.drain(ROUTES, batch=100, now_iso="x", keep_armed=False)
    assert (drained.events, drained.more) == (0, False)
    assert not rdb.exists(keys.dispatch_armed)
    assert not rdb.exists(keys.dispatch_waiting)
    publish(publisher, "usr_2")
    assert rdb.llen(keys.queue) == 2  # nobody lingers: this event armed a trigger of its own


def test_ready_deliveries_wake_the_slot_that_waits_instead_of_arming_another(
    store: Store, publisher: Publisher, wakeups: Wakeups, rdb: redis.Redis, keys: Keys
) -> None:
    publish(publisher)
    (trigger,) = store.drain(ROUTES, batch=100, now_iso="x").triggers
    token = trigger.token
    with wakeups.linger(slot_name("s", token), seconds=LONG_S) as linger:
        assert linger.keep()
        first = store.claim("s", token, most=10, lease_ms=10_000, bound=4, keep=True)
        assert first is not None
        assert len(first.claims) == 1
        linger.worked()
        assert linger.keep()
        empty = store.claim("s", token, most=10, lease_ms=10_000, bound=4, keep=True)
        assert empty is not None
        assert empty.claims == []
        woken = waiting(linger)
        second = publish(publisher, "usr_2")
        assert store.drain(ROUTES, batch=100, now_iso="x").triggers == []  # no new slot ...
        assert woken() is True  # ... the waiting one was woken
        assert linger.keep()
        batch = store.claim("s", token, most=10, lease_ms=10_000, bound=4, keep=True)
    assert batch is not None
    assert [c.event_id for c in batch.claims] == [second]
    assert rdb.zcard(keys.slots("s")) == 1


def test_a_claim_that_leaves_work_wakes_a_waiting_slot_rather_than_arming_one(
    store: Store, publisher: Publisher, wakeups: Wakeups, rdb: redis.Redis, keys: Keys
) -> None:
    for user in ("usr_1", "usr_1", "usr_2", "usr_2"):  # two users, two events each
        publish(publisher, user)
    (trigger,) = store.drain(ROUTES, batch=100, now_iso="x").triggers
    a, b = trigger.token, "424242"
    heads = store.claim("s", a, most=10, lease_ms=10_000, bound=1)  # A takes both heads
    assert heads is not None
    assert len(heads.claims) == 2
    rdb.zadd(keys.slots("s"), {b: 10**15})  # a second live slot, B ...
    with wakeups.linger(slot_name("s", b), seconds=LONG_S) as linger:
        assert linger.keep()
        assert store.claim("s", b, most=10, lease_ms=10_000, bound=4, keep=True) is not None
        woken = waiting(linger)  # ... waits for work
        # A delivers both: each user's next event is ready (no script woke anyone yet) ...
        store.finish([(c, finish_delivered()) for c in heads.claims])
        assert rdb.llen(keys.ready("s")) == 2
        # ... and A's claim takes its share, one, leaving one: B is woken, nothing is armed.
        batch = store.claim("s", a, most=10, lease_ms=10_000, bound=4)
        assert woken() is True
    assert batch is not None
    assert len(batch.claims) == 1
    assert batch.more == []


def test_a_lapsed_slot_is_not_woken_a_new_one_is_armed(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    publish(publisher)
    (trigger,) = store.drain(ROUTES, batch=100, now_iso="x").triggers
    a, b = trigger.token, "424242"
    assert store.claim("s", a, most=10, lease_ms=10_000, bound=4) is not None
    rdb.zadd(keys.slots("s"), {b: 10**15})
    assert store.claim("s", b, most=10, lease_ms=10_000, bound=4, keep=True) is not None
    rdb.zadd(keys.slots("s"), {b: 1})  # B's worker died while B waited: its slot lapsed
    publish(publisher, "usr_2")
    publish(publisher, "usr_3")
    assert store.drain(ROUTES, batch=100, now_iso="x").triggers == []  # A is live
    batch = store.claim("s", a, most=1, lease_ms=10_000, bound=4)
    assert batch is not None
    assert len(batch.claims) == 1
    assert len(batch.more) == 1  # work left: a new slot, not a wake-up lost on the lapsed one
    assert not rdb.exists(keys.slot_waiting("s"))


def test_at_most_seats_tasks_linger_at_once(rdb: redis.Redis, keys: Keys) -> None:
    wakeups = Wakeups(rdb, keys.wake, seats=1)
    with wakeups.linger(DISPATCH) as first:
        assert first.keep()
        with wakeups.linger(slot_name("s", "1")) as second:
            assert not second.keep()  # no seat: its trigger is released when nothing is left
            assert second.wait() is False
        first.worked()  # working, not waiting: the seat is free again
        with wakeups.linger(slot_name("s", "2")) as third:
            assert third.keep()
            assert not first.keep()


def test_without_the_listener_a_wait_is_a_short_poll(rdb: redis.Redis, keys: Keys) -> None:
    unstarted = Wakeups(rdb, keys.wake, seats=4)
    assert not unstarted.live
    with unstarted.linger(DISPATCH, seconds=LONG_S) as linger:
        assert linger.keep()
        assert waiting(linger)() is False  # ended by the poll, not by a wake-up


@pytest.mark.parametrize(
    ("threads", "lingering"), [(16, 14), (8, 6), (4, 2), (3, 1), (2, 1), (1, 0)]
)
def test_every_thread_but_two_may_linger_and_never_the_last(threads: int, lingering: int) -> None:
    assert seats(threads) == lingering
