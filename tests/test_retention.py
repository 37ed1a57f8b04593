"""Retention: records expire on their own, and no index entry is left pointing at a record that
expired (the dead-letter indexes are trimmed by the scheduler's sweep)."""

from __future__ import annotations

import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.records.shapes import Finish
from reseller_webhooks.worker.records.store import Store
from tests.helpers import ROUTES, assert_audit_balances, wait_until


def orphans(client: redis.Redis, keys: Keys) -> dict[str, list[str]]:
    """Index entries whose record is gone, per index."""
    indexes = {
        keys.dead: keys.dead_letter,
        keys.dead_of("s"): keys.dead_letter,
        keys.open_deliveries("s"): keys.delivery,
        keys.due: keys.delivery,
    }
    found = {}
    for index, record in indexes.items():
        members = [m.decode() for m in client.zrange(index, 0, -1)]
        found[index] = [m for m in members if not client.exists(record(m))]
    ready = [m.decode() for m in client.lrange(keys.ready("s"), 0, -1)]
    found[keys.ready("s")] = [m for m in ready if not client.exists(keys.delivery(m))]
    return {index: gone for index, gone in found.items() if gone}


def test_expired_records_leave_no_index_entry_behind(
    rdb: redis.Redis, keys: Keys, publisher: Publisher
) -> None:
    store = Store(rdb, keys, record_retention_s=1, dead_letter_retention_s=1, attempt_log_size=10)
    for n in range(2):
        publisher.user_created({**sample_user(), "id": f"usr_{n}"})
    store.drain(ROUTES, batch=100, now_iso="2026-01-01T00:00:00.000Z")
    token = rdb.zrange(keys.slots("s"), 0, 0)[0].decode()
    batch = store.claim("s", token, most=2, lease_ms=10_000, bound=1)
    assert batch is not None
    delivered, dead = batch.claims
    letter = {"event_id": dead.event_id, "subscriber_id": "s", "event_type": "t", "body": "{}"}
    store.finish(
        [
            (delivered, Finish("delivered", {"outcome": "delivered"})),
            (dead, Finish("dead", {"outcome": "dead"}, dead_letter=letter, reason="gave up")),
        ]
    )
    assert rdb.ttl(keys.delivery(delivered.delivery_id)) > 0
    assert rdb.ttl(keys.attempts(dead.delivery_id)) > 0
    wait_until(
        lambda: not rdb.exists(keys.dead_letter(dead.delivery_id), keys.delivery(dead.delivery_id)),
        timeout_s=10,
        what="the dead letter and the delivery records expired",
    )
    assert orphans(rdb, keys)  # the dead-letter indexes still name the expired letter ...
    store.sweep(batch=100, dispatch_lost_after_s=60)
    assert orphans(rdb, keys) == {}  # ... until the next sweep
    assert_audit_balances(rdb, keys)  # the counts outlive the records they counted
