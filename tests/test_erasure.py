"""Erasure by user: after ``users forget``, no key in Redis holds any of the user's values (every
key scanned), another user's data is untouched, the user's undelivered deliveries are cancelled
and counted, and the audit still balances."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.records.erasure import Erasure, Preview
from reseller_webhooks.worker.records.shapes import Claim, Finish, Route
from reseller_webhooks.worker.records.store import Store
from tests.helpers import Deployment, assert_audit_balances, every_value, own_values, person

ROUTES = {
    kind: [Route("s", ordered=True, coalesce=False), Route("t", ordered=False, coalesce=False)]
    for kind in ("reseller.user.created", "reseller.user.updated")
}
NOW = "2026-01-01T00:00:00.000Z"


def attempt(store: Store, rdb: redis.Redis, keys: Keys, outcome: str, echo: str) -> Claim:
    """Claim the next of subscriber s's deliveries and record an attempt whose response
    excerpt echoes ``echo``; a dead one leaves a dead letter with the body."""
    token = rdb.zrange(keys.slots("s"), 0, 0)[0].decode()
    batch = store.claim("s", token, most=1, lease_ms=10_000, bound=4)
    assert batch is not None
    (claim,) = batch.claims
    letter = {
        "event_id": claim.event_id,
        "subscriber_id": "s",
        "event_type": "reseller.user.created",
        "body": claim.body.decode(),
    }
    entry = {"outcome": outcome, "response": f"received {echo}"}
    result = Finish(outcome, entry, dead_letter=letter, disable_after_ms=10**9, reason="gave up")
    assert store.finish([(claim, result)]) == [True]
    return claim


@pytest.mark.slow
def test_forget_leaves_none_of_the_users_values_and_the_audit_balances(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys, tmp_path: Path, redis_url: str
) -> None:
    gone, kept = person("gone"), person("kept")
    publisher.user_created(gone)
    publisher.user_updated({**gone, "company": "v2"})
    publisher.user_updated({**gone, "company": "v3"})
    store.drain(ROUTES, batch=100, now_iso=NOW)
    assert attempt(store, rdb, keys, "delivered", gone["email"]).attempt == 1
    attempt(store, rdb, keys, "dead", gone["email"])  # a dead letter holding the body
    publisher.user_created(kept)
    store.drain(ROUTES, batch=100, now_iso=NOW)
    publisher.user_updated({**gone, "company": "v4"})  # not drained yet
    values = every_value(rdb)
    assert any(gone["email"].encode() in v for v in values)
    # What the console's confirmation names; nothing changes yet.
    assert Erasure(store).preview(gone["id"], ["s", "t"]) == Preview(4, 4, 1)
    assert any(gone["email"].encode() in v for v in every_value(rdb))

    dep = Deployment(tmp_path=tmp_path, redis_url=redis_url)
    dep.subscriber("s", "http://127.0.0.1:9/s")
    dep.subscriber("t", "http://127.0.0.1:9/t")
    done = dep.cli("users", "forget", gone["id"], "--operator", "alice", "--yes")
    assert done.returncode == 0, done.stderr
    # Open then: the second update to s (ready after the first died) and all three to t.
    assert "4 undelivered delivery(ies) cancelled, 1 dead letter(s)" in done.stdout, done.stdout
    assert "alice" in done.stderr
    assert gone["id"] not in done.stderr

    values = every_value(rdb)
    for secret in own_values(gone):
        assert not any(secret in v for v in values), secret
    for other in own_values(kept):
        assert any(other in v for v in values), other
    report = assert_audit_balances(rdb, keys)
    assert {s.subscriber_id: s.tally.erased for s in report.subscribers} == {"s": 1, "t": 3}
    again = Erasure(store).forget(gone["id"], ["s", "t"])
    assert (again.events, again.cancelled, again.dead_letters) == (0, 0, 0)
    assert_audit_balances(rdb, keys)
    # The user's numbering goes on (a receiver that kept its last applied number drops nothing).
    later = publisher.user_updated({**gone, "company": "v5"})
    assert rdb.hget(keys.event(later), "seq") == b"5"
