"""A Redis that comes back empty or behind is noticed: the worker stops its work and says so
(log, metric, operational event), the publisher refuses, and an operator's accept-reset resumes
them; nothing published after the accept is lost, and the audit balances."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.errors import StoreResetError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.store_identity import (
    BEHIND,
    EMPTY,
    REPLACED,
    StoreWatch,
    accept_reset,
    assess,
)
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import Deployment, assert_audit_balances, wait_until
from tests.test_metrics import metrics_worker, samples, scrape_text


@pytest.mark.parametrize(
    ("known", "seen", "found_id", "found", "expected"),
    [
        (None, 0, None, 0, None),  # a first look at a new store
        (None, 0, "a", 7, None),  # a first look at a store in use
        ("a", 7, "a", 7, None),
        ("a", 7, "a", 9, None),
        ("a", 7, None, 0, EMPTY),
        ("a", 7, "b", 9, REPLACED),
        ("a", 7, "a", 5, BEHIND),
    ],
)
def test_what_a_process_makes_of_the_store_it_finds(
    known: str | None, seen: int, found_id: str | None, found: int, expected: str | None
) -> None:
    assert assess(known, seen, found_id, found) == expected


def publish_refused(publisher: Publisher, ids: list[str]) -> bool:
    """Publish one event; True if refused, else its id joins ``ids``."""
    try:
        ids.append(publisher.user_created(sample_user()))
    except StoreResetError:
        return True
    return False


@pytest.mark.slow
def test_redis_restarted_without_persistence_stops_the_work_until_accepted(
    tmp_path: Path, receiver: Receiver
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    dep = Deployment(tmp_path=tmp_path, redis_url=server.url)
    dep.subscriber("s", f"{receiver.url}/s", ["reseller.user.*"])
    dep.subscriber("ops", f"{receiver.url}/ops", ["webhooks.*"])
    client = redis.Redis.from_url(server.url)
    try:
        port = metrics_worker(dep)
        worker = dep.workers[0]
        with Publisher(ProducerSettings(redis_url=server.url, visibility_timeout_s=3)) as pub:
            ids = [pub.user_created(sample_user())]
            receiver.wait_for(1, timeout_s=30)
            server.stop(kill=True)  # a crash, and its data gone with it (no AOF, no snapshot)
            shutil.rmtree(server.directory)
            server.start()

            wait_until(lambda: "STORE RESET: work stopped" in worker.log(), what="the worker")
            wait_until(lambda: publish_refused(pub, ids), what="the publisher refusing")
            got = samples(scrape_text(port))
            assert got[("webhooks_store_reset", frozenset())] == 1
            status = dep.cli("store", "status")
            assert "NOTICED: Redis has no store identity" in status.stdout, status.stdout

            done = dep.cli("store", "accept-reset", "--operator", "alice")
            assert done.returncode == 0, done.stderr
            wait_until(lambda: "store reset accepted" in worker.log(), what="the worker resuming")
            wait_until(lambda: not publish_refused(pub, ids), what="the publisher publishing")
        wait_until(
            lambda: any(r.path == "/ops" for r in receiver.received),
            what="webhooks.store.reset delivered",
        )
        (ops,) = [r.json for r in receiver.received if r.path == "/ops"]
        assert ops["event"] == "webhooks.store.reset"
        assert ops["data"]["change"] == EMPTY
        # Every publish that returned an id (before the publisher noticed, and after the
        # accept) is delivered.
        wait_until(
            lambda: {r.headers["webhook-id"] for r in receiver.received} >= set(ids),
            what="the events published around the reset delivered",
        )
        assert samples(scrape_text(port))[("webhooks_store_reset", frozenset())] == 0
        assert_audit_balances(client, Keys("rw"))
    finally:
        dep.kill_all()
        client.close()
        server.stop(kill=True)


def test_a_step_back_is_measured_against_what_was_seen_a_look_earlier(
    rdb: redis.Redis, keys: Keys
) -> None:
    """The writes of the last look may not be on a replica yet (a failover may lose them):
    losing those is no reset; losing what was there a look earlier is."""
    watch = StoreWatch(rdb, keys)
    rdb.hset(keys.global_tally, "published", 5)
    assert watch.check() is None
    rdb.hset(keys.global_tally, "published", 4)
    assert watch.check() is None
    rdb.hset(keys.global_tally, "published", 3)
    change = watch.check()
    assert change is not None
    assert (change.kind, change.seen, change.found) == (BEHIND, 5, 3)
    assert watch.check() is change  # kept until accepted
    assert b"stale:" in b" ".join(rdb.hkeys(keys.store_identity))
    accept_reset(rdb, keys)
    assert watch.check() is None
    assert watch.known_id == rdb.hget(keys.store_identity, "id").decode()
