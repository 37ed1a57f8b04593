"""The audit: every delivery fanned out ends once or is open, every event published is drained
or pending; counted by the scripts that move them, even when a call is run twice; and a record
broken on purpose is found (by the command, the metric and its alert's rule)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.delivery.burst_log import BurstLog
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.ops.deployment_metrics import RedisCollector
from reseller_webhooks.worker.records.shapes import Claim, Finish, Route
from reseller_webhooks.worker.records.store import Store
from reseller_webhooks.worker.records.tally import (
    GlobalTally,
    Tally,
    events_unaccounted,
    unaccounted,
)
from tests.helpers import Deployment, assert_audit_balances, audit_of

COALESCING = {
    "reseller.user.created": [Route("s", ordered=True, coalesce=True)],
    "reseller.user.updated": [Route("s", ordered=True, coalesce=True)],
}
NOW = "2026-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("tally", "open_count", "expected"),
    [
        (Tally(), 0, 0),
        (Tally(fanned_out=5, delivered=2, dead=1, superseded=1), 1, 0),
        (Tally(fanned_out=5, delivered=2, erased=1, removed=1), 1, 0),
        (Tally(fanned_out=5, delivered=2), 1, 2),  # two went missing
        (Tally(fanned_out=1, delivered=1), 1, -1),  # open and ended: counted twice
    ],
)
def test_a_subscriber_balances_when_every_delivery_ended_once_or_is_open(
    tally: Tally, open_count: int, expected: int
) -> None:
    assert unaccounted(tally, open_count) == expected


@pytest.mark.parametrize(
    ("tally", "pending", "expected"),
    [
        (GlobalTally(published=3, drained=3, unmatched=1), 0, 0),
        (GlobalTally(published=3, drained=1), 2, 0),
        (GlobalTally(published=3, drained=1), 0, 2),
    ],
)
def test_events_balance_when_every_one_published_was_drained_or_waits(
    tally: GlobalTally, pending: int, expected: int
) -> None:
    assert events_unaccounted(tally, pending) == expected


def finish(store: Store, claim: Claim, outcome: str, **more: object) -> list[bool]:
    """FINISH, run twice with the same arguments (a retry after a lost reply)."""
    letter = {"event_id": claim.event_id, "subscriber_id": "s", "event_type": "t", "body": "{}"}
    result = Finish(outcome, {"outcome": outcome}, dead_letter=letter, disable_after_ms=10**9)
    result = dataclasses.replace(result, **more)  # type: ignore[arg-type]
    first = store.finish([(claim, result)])
    assert store.finish([(claim, result)]) == [False]
    return first


def claim_one(store: Store, rdb: redis.Redis, keys: Keys) -> Claim:
    token = rdb.zrange(keys.slots("s"), 0, 0)[0].decode()
    batch = store.claim("s", token, most=1, lease_ms=10_000, bound=4)
    assert batch is not None
    assert len(batch.claims) == 1
    return batch.claims[0]


def test_every_transition_counts_once_even_when_run_twice(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    user = sample_user()
    publisher.user_created(user, idempotency_key="k")
    publisher.user_created(user, idempotency_key="k")  # the producer's retry: one event
    assert store.drain({}, batch=100, now_iso=NOW).unmatched == 1
    assert_audit_balances(rdb, keys)

    publisher.user_created(user)
    publisher.user_updated(user)
    publisher.user_updated(user)  # supersedes the first update, blocked behind the creation
    store.drain(COALESCING, batch=100, now_iso=NOW)
    assert_audit_balances(rdb, keys)
    assert finish(store, claim_one(store, rdb, keys), "delivered") == [True]
    assert_audit_balances(rdb, keys)

    update = claim_one(store, rdb, keys)
    assert finish(store, update, "retry", delay_ms=60_000) == [True]
    assert store.expedite("s") == 1
    assert store.sweep(batch=100, dispatch_lost_after_s=60).moved == 1
    assert finish(store, claim_one(store, rdb, keys), "dead", reason="gave up") == [True]
    assert audit_of(rdb, keys).subscribers[0].tally.dead == 1
    assert store.replay(update.delivery_id, event_ttl_s=60) is not None
    assert store.replay(update.delivery_id, event_ttl_s=60) is None  # replayed once

    report = assert_audit_balances(rdb, keys)
    (s,) = report.subscribers
    assert s.tally == Tally(fanned_out=3, delivered=1, superseded=1)
    assert s.open == 1
    # The dead delivery's announcement is an event too, still pending.
    assert report.tally == GlobalTally(published=5, drained=4, unmatched=1)
    assert report.pending == 1


def scraped(store: Store) -> dict[str, float]:
    """The audit's metrics, as one scrape reads them."""
    collector = RedisCollector(store, lambda: ["s"], dead_ttl_s=3600)
    wanted = {"webhooks_unaccounted_deliveries", "webhooks_unaccounted_events"}
    wanted.add("webhooks_unmatched_events_total")
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in collector.collect()
        for sample in family.samples
        if sample.name in wanted
    }


@pytest.mark.slow
def test_a_deleted_record_or_index_entry_is_found_and_named(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys, tmp_path: Path, redis_url: str
) -> None:
    ids = [publisher.user_created({**sample_user(), "id": f"usr_{n}"}) for n in range(3)]
    store.drain(COALESCING, batch=100, now_iso=NOW)
    dep = Deployment(tmp_path=tmp_path, redis_url=redis_url)
    dep.subscriber("s", "http://127.0.0.1:9/s")
    assert list(assert_audit_balances(rdb, keys).lines())[-1] == "balanced"
    assert scraped(store)['webhooks_unaccounted_deliveries{"subscriber": "s"}'] == 0

    lost = f"{ids[1]}:s"
    rdb.delete(keys.delivery(lost))  # a record gone: its index entry points at nothing
    done = dep.cli("audit")
    assert done.returncode == 1
    assert "unaccounted: s: 1 delivery(ies) fanned out but neither ended nor open" in done.stdout
    assert f"delivery ids: {lost}" in done.stdout
    as_json = json.loads(json.dumps(audit_of(rdb, keys).as_dict()))  # what --json prints
    assert as_json["balanced"] is False
    assert as_json["subscribers"][0]["broken_open_entries"] == [lost]

    rdb.zrem(keys.open_deliveries("s"), f"{ids[2]}:s")  # an index entry gone: the counts see it
    figures = scraped(store)
    assert figures['webhooks_unaccounted_deliveries{"subscriber": "s"}'] == 1
    assert figures["webhooks_unaccounted_events{}"] == 0
    rdb.hincrby(keys.global_tally, "published", 1)  # an event recorded but never pending
    assert scraped(store)["webhooks_unaccounted_events{}"] == 1


def test_events_no_subscriber_takes_are_logged_once_per_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    burst = BurstLog(logging.getLogger("t"), "%d unmatched", quiet_s=60, clock=lambda: now[0])
    steps = [(0, 3), (1, 5), (30, 2), (61, 1), (62, 0), (200, 4)]
    for at, n in steps:
        now[0] = at
        burst.add(n)
    assert [r.getMessage() for r in caplog.records] == ["3 unmatched", "8 unmatched", "4 unmatched"]
