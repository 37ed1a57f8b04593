"""The circuit breaker: its readings (table tests) and its transitions, driven through the
scripts on a real Redis (FINISH moves it, CLAIM obeys it, SWEEP arms no slot while it holds)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.delivery.chunk_streak import ChunkStreak
from reseller_webhooks.worker.records.breaker import (
    BreakerView,
    probe_intervals_ms,
    read_breaker,
)
from reseller_webhooks.worker.records.shapes import Claim, ClaimBatch, Finish
from reseller_webhooks.worker.records.store import Store
from tests.helpers import ROUTES, publish_burst, wait_until
from tests.test_subscribers import problem, sub

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, BreakerView("closed")),
        ({"breaker": "bogus"}, BreakerView("closed")),
        ({"breaker": "half_open", "trial_left": "2"}, BreakerView("half_open", trials_left=2)),
        ({"breaker": "open", "probe_at": str(NOW + 500)}, BreakerView("open", NOW + 500)),
        (  # a probe in flight: the next may go when its lease ends, if later than probe_at
            {"breaker": "open", "probe_at": str(NOW + 500), "probe_lease": str(NOW + 9000)},
            BreakerView("open", NOW + 9001, probing=True),
        ),
        (  # a lost probe (its lease passed): another may go at probe_at
            {"breaker": "open", "probe_at": str(NOW - 5), "probe_lease": str(NOW - 1)},
            BreakerView("open", NOW - 5),
        ),
        ({"breaker": "open", "probe_at": "garbage"}, BreakerView("open", 0)),
    ],
)
def test_read_breaker(fields: dict[str, str], expected: BreakerView) -> None:
    assert read_breaker(fields, NOW) == expected


@pytest.mark.parametrize(
    ("view", "text"),
    [
        (BreakerView("closed"), "closed"),
        (BreakerView("half_open", trials_left=3), "half-open (3 trial(s) left)"),
        (BreakerView("open", NOW, probing=True), "open (probe in flight)"),
        (BreakerView("open", NOW), "open (next probe 2027-01-15T08:00:00.000Z)"),
    ],
)
def test_breaker_described(view: BreakerView, text: str) -> None:
    assert view.describe("2027-01-15T08:00:00.000Z") == text


@pytest.mark.parametrize(
    ("scale", "intervals"),
    [(1.0, (5000, 300_000)), (0.01, (50, 3000)), (0.001, (5, 300)), (1e-6, (1, 1))],
)
def test_probe_intervals_follow_the_schedule_scale(
    scale: float, intervals: tuple[int, int]
) -> None:
    assert probe_intervals_ms(scale) == intervals


@pytest.mark.parametrize(
    ("outcomes", "ends_after"),
    [
        (["delivered"] * 5, None),
        (["retry", "delivered", "retry", "delivered"], None),  # isolated failures go on
        (["retry", "retry", "delivered"], 2),
        (["delivered", "dead", "gone"], 3),
        (["retry", "skipped", "retry"], None),  # a skipped delivery was not attempted
    ],
)
def test_a_chunk_ends_at_two_failures_in_a_row(outcomes: list[str], ends_after: int | None) -> None:
    streak = ChunkStreak()
    ended = [n for n, outcome in enumerate(outcomes, 1) if streak.ends(outcome)]
    assert (ended[0] if ended else None) == ends_after


@pytest.mark.parametrize("value", [0, -1, "ten", 2.5])
def test_breaker_after_is_validated_naming_the_field(value: Any) -> None:
    text = problem({"subscribers": [sub(breaker_after=value)]})
    assert "subscriber 'acme-crm' field 'breaker_after'" in text


# The transitions, on the session's Redis.


def store_at(rdb: redis.Redis, keys: Keys, scale: float) -> Store:
    return Store(
        rdb,
        keys,
        record_retention_s=3600,
        dead_letter_retention_s=3600,
        attempt_log_size=10,
        failing_after=3,
        schedule_scale=scale,
    )


def slot(rdb: redis.Redis, keys: Keys, token: str) -> str:
    """The one live slot of subscriber 's' (as a deliver trigger would hold)."""
    rdb.delete(keys.slots("s"))
    rdb.zadd(keys.slots("s"), {token: int(time.time() * 1000) + 60_000})
    return token


def claim(store: Store, token: str, most: int = 10) -> ClaimBatch | None:
    slot(store.redis, store.keys, token)
    return store.claim("s", token, most=most, lease_ms=30_000, bound=1)


def finish(store: Store, claims: list[Claim], outcome: str, **extra: Any) -> None:
    extra = {"delay_ms": 10**7, "disable_after_ms": 10**9, "breaker_after": 3, **extra}
    letter = {"event_type": "reseller.user.created", "body": "{}"}
    store.finish(
        [(c, Finish(outcome, {"outcome": outcome}, dead_letter=letter, **extra)) for c in claims]
    )


def health(rdb: redis.Redis, keys: Keys) -> dict[str, str]:
    raw = rdb.hgetall(keys.subscriber_state("s"))
    return {k.decode(): v.decode() for k, v in raw.items()}


def fail_until_open(store: Store, publisher: Publisher, events: int, **extra: Any) -> None:
    publish_burst(publisher, events)
    store.drain(ROUTES, batch=500, now_iso="2026-01-01T00:00:00Z")
    for n in range(3):
        batch = claim(store, f"f{n}")
        assert batch is not None
        assert len(batch.claims) == (10 if n == 0 else 1)  # failing: one at a time
        finish(store, batch.claims[:1], "retry", **extra)
        if n == 0:  # the rest of the first chunk given back untried, as the deliverer does
            store.extend(batch.claims[1:], lease_ms=0)
            store.sweep(batch=100, dispatch_lost_after_s=60)


def test_the_breaker_opens_at_breaker_after_and_holds_every_claim(
    rdb: redis.Redis, keys: Keys, publisher: Publisher
) -> None:
    store = store_at(rdb, keys, 1.0)
    fail_until_open(store, publisher, 12)
    state = health(rdb, keys)
    assert (state["breaker"], state["probe_interval_ms"]) == ("open", "5000")
    assert state["notified"] == "failing"
    before = int(time.time() * 1000)
    assert claim(store, "held") is None  # held: nothing claimed ...
    assert rdb.zscore(keys.slots("s"), "held") is None  # ... and the slot released
    hold_until = int(health(rdb, keys)["hold_until"])
    assert before + 4000 < hold_until <= int(time.time() * 1000) + 5000
    rdb.delete(keys.slots("s"))
    swept = store.sweep(batch=100, dispatch_lost_after_s=60)
    assert [t for t in swept.triggers if t.subscriber_id == "s"] == []  # no slot while held
    assert rdb.llen(keys.ready("s")) == 9  # waiting, no attempt burnt
    assert {
        int(rdb.hget(keys.delivery(d.decode()), "attempts") or 0)
        for d in rdb.lrange(keys.ready("s"), 0, -1)
    } == {0}


def test_one_probe_at_a_time_then_half_open_trials_then_closed_with_the_backlog_due_now(
    rdb: redis.Redis, keys: Keys, publisher: Publisher
) -> None:
    store = store_at(rdb, keys, 0.0002)  # probes from 1 ms to 60 ms
    fail_until_open(store, publisher, 12)

    def probe(token: str) -> list[Claim]:
        batch = claim(store, token)
        return batch.claims if batch else []

    first = wait_until(lambda: probe("p1"), timeout_s=5, what="a probe")
    assert len(first) == 1
    assert claim(store, "p2") is None  # one probe in flight: held until its lease ends
    assert int(health(rdb, keys)["hold_until"]) > first[0].lease
    finish(store, first, "retry")  # the probe failed: twice the interval
    assert health(rdb, keys)["probe_interval_ms"] == "2"
    second = wait_until(lambda: probe("p3"), timeout_s=5, what="a second probe")
    finish(store, second, "delivered")
    assert (health(rdb, keys)["breaker"], health(rdb, keys)["trial_left"]) == ("half_open", "3")
    for n in range(3):
        batch = claim(store, f"t{n}")
        assert batch is not None
        assert len(batch.claims) == 1  # trials one at a time
        finish(store, batch.claims, "delivered")
    state = health(rdb, keys)
    assert {"breaker", "failing_since", "hold_until"}.isdisjoint(state)
    now_ms = int(time.time() * 1000) + 5
    waiting = [
        d
        for d in rdb.zrange(keys.open_deliveries("s"), 0, -1)
        if rdb.hget(keys.delivery(d.decode()), "state") == b"waiting"
    ]
    assert len(waiting) == 4  # the 3 first failures and the failed probe ...
    assert all(rdb.zscore(keys.due, d) <= now_ms for d in waiting)  # ... due now, not in hours
    batch = claim(store, "after")
    assert batch is not None
    assert len(batch.claims) == 4  # the ready backlog, a chunk again


def test_a_410_leaves_no_breaker_to_probe(
    rdb: redis.Redis, keys: Keys, publisher: Publisher
) -> None:
    store = store_at(rdb, keys, 0.0002)
    fail_until_open(store, publisher, 12)
    batch = wait_until(lambda: (claim(store, "p") or ClaimBatch([], [], "")).claims, timeout_s=5)
    finish(store, batch, "gone", reason="subscriber gone: HTTP 410")
    state = health(rdb, keys)
    assert (state["disabled"], "breaker" in state) == ("1", False)
    after = claim(store, "q")
    assert after is not None
    assert after.disabled_reason == "subscriber gone: HTTP 410"
    assert len(after.claims) == 1  # dead-lettered at claim, as without a breaker


def test_a_subscriber_disabled_by_failing_is_probed_slowly_and_a_good_probe_enables_it(
    rdb: redis.Redis, keys: Keys, publisher: Publisher
) -> None:
    store = store_at(rdb, keys, 0.0002)
    publish_burst(publisher, 40)
    store.drain(ROUTES, batch=500, now_iso="2026-01-01T00:00:00Z")
    batch = claim(store, "a", most=1)
    assert batch is not None
    finish(store, batch.claims, "retry", disable_after_ms=0)  # disabled at once
    state = health(rdb, keys)
    assert (state["disabled"], state["breaker"], state["probe_interval_ms"]) == ("1", "open", "60")

    def probe() -> ClaimBatch | None:
        """A claim; one made between probes is dead-lettered unattempted, as the deliverer does."""
        got = claim(store, "c", most=1)
        assert got is not None
        if not got.disabled_reason:
            return got
        finish(store, got.claims, "skipped", reason=got.disabled_reason)
        return None

    assert probe() is None  # at once: not yet a probe
    batch = wait_until(probe, timeout_s=5, what="a probe of the disabled subscriber")
    assert len(batch.claims) == 1
    finish(store, batch.claims, "delivered")
    state = health(rdb, keys)
    assert (state["disabled"], state["breaker"]) == ("0", "half_open")


def test_a_probe_answered_429_is_no_longer_in_flight(
    rdb: redis.Redis, keys: Keys, publisher: Publisher
) -> None:
    store = store_at(rdb, keys, 0.0002)
    fail_until_open(store, publisher, 12)
    batch = wait_until(lambda: (claim(store, "p") or ClaimBatch([], [], "")).claims, timeout_s=5)
    assert health(rdb, keys)["probe_lease"] == str(batch[0].lease)
    finish(store, batch, "throttled")  # deferred to the front of ready, not counted
    assert "probe_lease" not in health(rdb, keys)
    again = wait_until(lambda: (claim(store, "q") or ClaimBatch([], [], "")).claims, timeout_s=5)
    assert again[0].delivery_id == batch[0].delivery_id  # the next probe, well before its lease
