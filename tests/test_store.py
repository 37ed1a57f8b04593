"""The delivery state machine's scripts against a real Redis, without workers: who owns what."""

from __future__ import annotations

import time

import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.records.shapes import Claim, Finish
from reseller_webhooks.worker.records.store import Store
from tests.helpers import ROUTES


def drain_one(store: Store, publisher: Publisher, user_id: str = "usr_1") -> tuple[str, str]:
    """Publish one event, fan it out; returns (delivery id, slot token)."""
    event_id = publisher.user_created({**sample_user(), "id": user_id})
    drained = store.drain(ROUTES, batch=100, now_iso="2026-01-01T00:00:00Z")
    assert drained.events == 1
    tokens = [t.token for t in drained.triggers]
    return f"{event_id}:s", tokens[0] if tokens else ""


def finish(outcome: str, delay_ms: int | None = None) -> Finish:
    return Finish(outcome, {"outcome": outcome}, delay_ms=delay_ms, disable_after_ms=10**9)


def test_the_dispatch_trigger_is_armed_once_and_disarmed_when_drained(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    publisher.user_created(sample_user())
    publisher.user_created(sample_user())
    assert rdb.llen(keys.queue) == 1  # one trigger for both
    assert rdb.exists(keys.dispatch_armed)
    drained = store.drain(ROUTES, batch=1, now_iso="x")
    assert (drained.events, drained.more) == (1, True)
    assert rdb.exists(keys.dispatch_armed)
    drained = store.drain(ROUTES, batch=1, now_iso="x")
    assert (drained.events, drained.more) == (1, False)
    assert not rdb.exists(keys.dispatch_armed)
    publisher.user_created(sample_user())  # nothing armed: this publish sends a trigger
    assert rdb.llen(keys.queue) == 2


def test_a_claim_needs_a_live_slot_and_an_empty_claim_releases_it(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    did, token = drain_one(store, publisher)
    assert store.claim("s", "999", most=10, lease_ms=10_000, bound=4) is None
    batch = store.claim("s", token, most=10, lease_ms=10_000, bound=4)
    assert batch is not None
    assert [c.delivery_id for c in batch.claims] == [did]
    assert store.claim("s", token, most=10, lease_ms=10_000, bound=4) is None
    assert rdb.zcard(keys.slots("s")) == 0


def test_attempts_count_only_attempts_made_and_a_late_owner_records_nothing(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    did, token = drain_one(store, publisher)
    batch = store.claim("s", token, most=10, lease_ms=50, bound=4)
    assert batch is not None
    (stale,) = batch.claims
    assert stale.attempt == 1
    time.sleep(0.1)  # the lease (50 ms, server clock) runs out: its worker died ...
    rdb.zadd(keys.slots("s"), {token: 1})  # ... and its heartbeat stopped renewing the slot
    swept = store.sweep(batch=100, dispatch_lost_after_s=60)
    assert swept.moved == 1
    token2 = swept.triggers[0].token
    batch2 = store.claim("s", token2, most=10, lease_ms=10_000, bound=4)
    assert batch2 is not None
    (fresh,) = batch2.claims
    assert fresh.attempt == 1  # the first claim never recorded an attempt
    # The old owner comes back and reports: logged, but it moves nothing.
    assert store.finish([(stale, finish("delivered"))]) == [False]
    assert rdb.hget(keys.delivery(did), "state") == b"running"
    assert store.extend([stale], lease_ms=10_000) == []
    assert store.finish([(fresh, finish("retry", delay_ms=60_000))]) == [True]
    record = rdb.hgetall(keys.delivery(did))
    assert (record[b"state"], record[b"attempts"]) == (b"waiting", b"1")


def test_only_the_head_of_a_users_chain_is_ready(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    first, token = drain_one(store, publisher, "usr_a")
    second, none = drain_one(store, publisher, "usr_a")
    other, _ = drain_one(store, publisher, "usr_b")
    assert none == ""  # nothing new was ready for usr_a, and a slot is already live
    assert rdb.hget(keys.delivery(second), "state") == b"blocked"
    batch = store.claim("s", token, most=10, lease_ms=10_000, bound=1)
    assert batch is not None
    assert [c.delivery_id for c in batch.claims] == [first, other]
    claim: Claim = batch.claims[0]
    store.finish([(claim, finish("dead"))])  # dead or delivered, the next in line goes
    assert rdb.hget(keys.delivery(second), "state") == b"ready"
    assert rdb.lrange(keys.ready("s"), 0, -1) == [second.encode()]


def test_a_lapsed_slot_with_ready_work_is_armed_again_by_the_sweep(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    _did, token = drain_one(store, publisher)
    rdb.zadd(keys.slots("s"), {token: 1})  # its trigger was lost long ago
    swept = store.sweep(batch=100, dispatch_lost_after_s=60)
    assert [t.subscriber_id for t in swept.triggers] == ["s"]
    assert swept.triggers[0].token != token
    assert store.sweep(batch=100, dispatch_lost_after_s=60).triggers == []


def test_a_lost_dispatch_trigger_is_sent_again_after_the_visibility_timeout(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    publisher.user_created(sample_user())
    assert not store.sweep(batch=100, dispatch_lost_after_s=60).dispatch  # still in time
    rdb.set(keys.dispatch_armed, 1)  # armed long ago, never drained
    assert store.sweep(batch=100, dispatch_lost_after_s=60).dispatch
    assert not store.sweep(batch=100, dispatch_lost_after_s=60).dispatch  # re-armed now
    rdb.delete(keys.dispatch_armed)  # a publisher that could not send undid its arm
    assert store.sweep(batch=100, dispatch_lost_after_s=60).dispatch


def test_a_claim_records_the_finished_attempts_first_even_after_redis_lost_its_scripts(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    """A chunk's last results go with the next claim, in one round trip; a Redis that restarted
    without its scripts gets them loaded again, and both still happen."""
    first, token = drain_one(store, publisher, "usr_a")
    second, _ = drain_one(store, publisher, "usr_a")  # behind the first in its user's chain
    batch = store.claim("s", token, most=10, lease_ms=10_000, bound=4)
    assert batch is not None
    assert [c.delivery_id for c in batch.claims] == [first]
    rdb.script_flush()
    after = store.claim(
        "s",
        token,
        most=10,
        lease_ms=10_000,
        bound=4,
        finished=[(batch.claims[0], finish("delivered"))],
    )
    assert rdb.hget(keys.delivery(first), "state") == b"delivered"
    assert after is not None  # the finish ran first: the chain's next was ready for this claim
    assert [c.delivery_id for c in after.claims] == [second]
