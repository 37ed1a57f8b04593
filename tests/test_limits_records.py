"""The rate-limit gates of CLAIM and the 429 path of FINISH against a real Redis, without
workers: what is claimed, what is held and for how long, what a 429 changes."""

from __future__ import annotations

import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.ops.limit_gauges import limit_metrics
from reseller_webhooks.worker.records.shapes import Claim, Finish
from reseller_webhooks.worker.records.store import Store
from tests.helpers import ROUTES, wait_until

LIMIT_FIELDS = {b"rate", b"rate_changed_at", b"rate_from", b"tokens", b"tokens_at"}


def ready(store: Store, publisher: Publisher, count: int) -> str:
    """``count`` deliveries ready for subscriber ``s`` (a user each); the slot token armed."""
    publisher.publish_batch(
        [("reseller.user.created", {**sample_user(), "id": f"usr_{k}"}) for k in range(count)]
    )
    drained = store.drain(ROUTES, batch=1000, now_iso="2026-01-01T00:00:00Z")
    assert drained.events == count
    return drained.triggers[0].token


def throttled(pause_ms: int = 0, limit: float | None = None, measured: float = 0.0) -> Finish:
    return Finish(
        "throttled",
        {"outcome": "throttled"},
        delay_ms=60_000,
        disable_after_ms=10**9,
        rate_limit=limit,
        pause_ms=pause_ms,
        measured_rate=measured,
    )


def test_the_bucket_lets_the_burst_through_then_holds_the_slot_briefly(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    token = ready(store, publisher, 10)
    batch = store.claim("s", token, most=50, lease_ms=10_000, bound=4, rate=10, burst=3)
    assert batch is not None
    assert len(batch.claims) == 3
    held = store.claim("s", token, most=50, lease_ms=10_000, bound=4, rate=10, burst=3)
    assert held is not None  # a token refills within 100 ms: the slot is kept
    assert held.claims == []
    assert 0 < held.hold_ms <= 100
    assert rdb.zscore(keys.slots("s"), token) is not None
    assert rdb.llen(keys.ready("s")) == 7


def test_a_long_hold_releases_the_slot_and_the_sweep_arms_one_only_after_it(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    token = ready(store, publisher, 3)
    first = store.claim("s", token, most=50, lease_ms=10_000, bound=1, rate=1, burst=1)
    assert first is not None
    assert len(first.claims) == 1
    assert store.claim("s", token, most=50, lease_ms=10_000, bound=1, rate=1, burst=1) is None
    assert rdb.zcard(keys.slots("s")) == 0
    assert rdb.hget(keys.subscriber_state("s"), "hold_until") is not None
    assert store.sweep(batch=100, dispatch_lost_after_s=60).triggers == []  # held: no slot
    triggers = wait_until(
        lambda: store.sweep(batch=100, dispatch_lost_after_s=60).triggers,
        timeout_s=5,
        what="a slot armed at hold_until",
    )
    again = store.claim("s", triggers[0].token, most=50, lease_ms=10_000, bound=1, rate=1, burst=1)
    assert again is not None
    assert len(again.claims) == 1


def test_a_429_defers_without_counting_five_times_then_is_a_retry(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    token = ready(store, publisher, 2)
    for deferral in range(1, 7):
        batch = store.claim("s", token, most=1, lease_ms=10_000, bound=1, keep=True)
        assert batch is not None
        (claim,) = batch.claims
        assert claim.attempt == 1  # not one of the deferred attempts counted
        assert store.finish([(claim, throttled(limit=None, measured=10))]) == [True]
        record = rdb.hgetall(keys.delivery(claim.delivery_id))
        failing = rdb.hexists(keys.subscriber_state("s"), "failing_since")
        if deferral <= 5:  # back at the front of its line, no attempt counted, no failure
            assert not failing
            assert record[b"state"] == b"ready"
            assert record.get(b"attempts", b"0") == b"0"
            assert rdb.lindex(keys.ready("s"), 0) == claim.delivery_id.encode()
        else:  # deferred enough: an ordinary retry (and failure)
            assert failing
            assert record[b"state"] == b"waiting"
            assert record[b"attempts"] == b"1"
    assert rdb.zcard(keys.dead) == 0
    # the first 429 cut the rate from the measured 10/s; the later ones (within a second) not
    state = rdb.hgetall(keys.subscriber_state("s"))
    assert float(state[b"rate"]) == 7.0
    assert float(state[b"rate_from"]) == 10.0


def test_a_retry_after_pauses_every_claim_of_the_subscriber(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    token = ready(store, publisher, 3)
    batch = store.claim("s", token, most=1, lease_ms=10_000, bound=4, keep=True)
    assert batch is not None
    claim: Claim = batch.claims[0]
    store.finish([(claim, throttled(pause_ms=60_000, limit=20))])
    assert store.claim("s", token, most=50, lease_ms=10_000, bound=4, rate=20) is None
    assert rdb.llen(keys.ready("s")) == 3  # nothing claimed while paused
    state = rdb.hgetall(keys.subscriber_state("s"))
    assert int(state[b"hold_until"]) >= int(state[b"paused_until"]) - 1
    assert float(state[b"rate"]) == 14.0  # 0.7 x the configured 20/s


def test_a_healthy_subscriber_writes_no_limit_fields(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    token = ready(store, publisher, 2)
    batch = store.claim("s", token, most=50, lease_ms=10_000, bound=4)
    assert batch is not None
    done = Finish("delivered", {"outcome": "delivered"}, disable_after_ms=10**9)
    store.finish([(c, done) for c in batch.claims])
    state = rdb.hgetall(keys.subscriber_state("s"))
    assert not LIMIT_FIELDS & set(state)
    assert b"hold_until" not in state


def test_the_gauges_show_the_lowered_rate_and_the_pause(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    token = ready(store, publisher, 1)
    batch = store.claim("s", token, most=1, lease_ms=10_000, bound=4, rate=20)
    assert batch is not None
    store.finish([(batch.claims[0], throttled(pause_ms=60_000, limit=20))])
    families = {
        f.name: {s.labels["subscriber"]: s.value for s in f.samples}
        for f in limit_metrics(store, {"s": 20.0, "other": None})
    }
    assert families["webhooks_subscriber_paused"] == {"s": 1, "other": 0}
    assert set(families["webhooks_subscriber_rate_limit"]) == {"s"}  # other: unlimited
    assert 14.0 <= families["webhooks_subscriber_rate_limit"]["s"] < 15.0


def test_a_success_forgets_a_rate_grown_back_and_keeps_one_still_growing(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    token = ready(store, publisher, 3)
    batch = store.claim("s", token, most=1, lease_ms=10_000, bound=4, keep=True, rate=20)
    assert batch is not None
    store.finish([(batch.claims[0], throttled(limit=20))])
    assert float(rdb.hget(keys.subscriber_state("s"), "rate") or 0) == 14.0
    done = Finish("delivered", {"outcome": "delivered"}, disable_after_ms=10**9, rate_limit=20)
    batch = store.claim("s", token, most=1, lease_ms=10_000, bound=4, keep=True, rate=20)
    assert batch is not None
    store.finish([(batch.claims[0], done)])  # at once: 14/s and growing, kept
    assert rdb.hexists(keys.subscriber_state("s"), "rate")
    cut_at = int(rdb.hget(keys.subscriber_state("s"), "rate_changed_at") or 0)
    rdb.hset(keys.subscriber_state("s"), "rate_changed_at", cut_at - 3_000)  # cut 3 s earlier
    batch = store.claim("s", token, most=1, lease_ms=10_000, bound=4, keep=True, rate=20)
    assert batch is not None
    store.finish([(batch.claims[0], done)])  # 14 + 3 s x 2/s: back at 20/s, forgotten
    state = rdb.hgetall(keys.subscriber_state("s"))
    assert not {b"rate", b"rate_changed_at", b"rate_from"} & set(state)
    assert b"tokens" in state  # the configured bucket goes on
