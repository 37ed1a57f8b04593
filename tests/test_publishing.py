"""Publishing as API services do it: one event per call, from several processes, with failures.

A publish that returned an id is never lost and never duplicated by a retry with the same key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from celery import Celery

from reseller_webhooks.producers.errors import (
    IdempotencyKeyReusedError,
    InvalidEventError,
    UnavailableError,
)
from reseller_webhooks.producers.events import build_event
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.redis_server import RedisServer, free_port
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import ROOT, Deployment, settled, wait_until

PRODUCERS = 4
EACH = 150
PRODUCER = [sys.executable, "-m", "bench.producer"]


@pytest.mark.slow
def test_producers_publishing_while_workers_drain_lose_nothing(
    deployment: Deployment, receiver: Receiver, rdb: redis.Redis, keys: Keys
) -> None:
    """The shared trigger's race: an event recorded just as a worker finishes draining must
    still be triggered. Four processes publish one event per call, unpaced, while two workers
    drain; every id must arrive."""
    deployment.subscriber("s", f"{receiver.url}/s")
    deployment.start_worker()
    deployment.start_worker()
    children = [
        subprocess.Popen(
            [*PRODUCER, deployment.redis_url, str(EACH), "0", f"p{n}"],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        for n in range(PRODUCERS)
    ]
    sent: set[str] = set()
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        sent |= set(json.loads(out)["sent"])
    assert len(sent) == PRODUCERS * EACH
    wait_until(
        lambda: {r.headers["webhook-id"] for r in receiver.received} >= sent,
        timeout_s=60,
        what="every published event delivered",
    )
    wait_until(lambda: settled(rdb, keys), what="nothing left pending")
    counts = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert set(counts) == sent
    assert max(counts.values()) == 1  # nobody died: no reason for a duplicate
    assert not rdb.exists(keys.dispatch_armed)


@pytest.mark.slow
def test_a_publish_whose_trigger_cannot_be_sent_returns_its_id_and_is_delivered(
    deployment: Deployment, receiver: Receiver, redis_url: str
) -> None:
    """The record is the commit point: a broker that refuses the message costs a delay."""
    deployment.subscriber("s", f"{receiver.url}/s")
    deployment.start_worker()
    broken = Celery(broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    broken.conf.broker_connection_retry_on_startup = False
    broken.conf.broker_connection_max_retries = 0
    broken.conf.task_publish_retry = False
    settings = ProducerSettings(redis_url=redis_url, visibility_timeout_s=3)
    with Publisher(settings, celery_app=broken) as publisher:
        event_id = publisher.user_created(sample_user())
    assert event_id.startswith("msg_")
    arrived = receiver.wait_for(1, timeout_s=15)
    assert [r.headers["webhook-id"] for r in arrived] == [event_id]


def test_an_idempotency_key_returns_the_first_id_and_sends_once(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    deployment.subscriber("s", f"{receiver.url}/s")
    first = publisher.user_created(sample_user(), idempotency_key="signup-42")
    again = publisher.user_created(sample_user(), idempotency_key="signup-42")
    other = publisher.user_created(sample_user(), idempotency_key="signup-43")
    assert again == first != other
    assert rdb.llen(keys.pending) == 2
    deployment.start_worker()
    wait_until(lambda: len(receiver.received) >= 2, what="both events delivered")
    wait_until(lambda: settled(rdb, keys), what="nothing left pending")
    assert sorted(r.headers["webhook-id"] for r in receiver.received) == sorted([first, other])


def test_the_fingerprint_covers_the_type_and_data_not_the_trigger_time() -> None:
    user = sample_user()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = build_event("reseller.user.created", user, triggered_at=at).fingerprint()
    later = build_event("reseller.user.created", user, triggered_at=at + timedelta(hours=1))
    assert later.fingerprint() == first
    tricky = {**user, "name": 'x","triggeredAt":"2026'}  # the field's name inside the data
    others = [
        build_event("reseller.user.updated", user, triggered_at=at),
        build_event("reseller.user.created", {**user, "name": "Ada L."}, triggered_at=at),
        build_event("reseller.user.created", tricky, triggered_at=at),
    ]
    assert len({first, *(e.fingerprint() for e in others)}) == 4


def test_an_idempotency_key_sent_again_with_another_event_is_refused(
    publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    user = {**sample_user(), "email": "first-7c1d@example.com"}
    first = publisher.user_created(user, idempotency_key="signup-7")
    reordered = dict(reversed(list(user.items())))  # the same data, keys in another order
    assert publisher.user_created(reordered, idempotency_key="signup-7") == first
    recorded = rdb.dump(keys.idempotency("signup-7"))
    changed = {**user, "email": "second-9e4a@example.com"}
    for event, data in [("reseller.user.created", changed), ("reseller.user.updated", user)]:
        with pytest.raises(IdempotencyKeyReusedError) as refused:
            publisher.publish(event, data, idempotency_key="signup-7")
        assert refused.value.status == 422
        message = str(refused.value)
        assert message.startswith("idempotency_key: already used for a different event")
        for secret in ("signup-7", "7c1d", "9e4a", user["id"]):  # neither the key nor the data
            assert secret not in message
    # A batch holding such a reuse records none of its events, even those before it.
    with pytest.raises(IdempotencyKeyReusedError, match=r"^idempotency_keys\[1\]: already used"):
        publisher.publish_batch(
            [("reseller.user.created", changed), ("reseller.user.updated", user)],
            idempotency_keys=["fresh-1", "signup-7"],
        )
    with pytest.raises(IdempotencyKeyReusedError, match=r"^idempotency_keys\[1\]: already used"):
        publisher.publish_batch(  # the same key twice in one batch, with two events
            [("reseller.user.created", user), ("reseller.user.created", changed)],
            idempotency_keys=["fresh-2", "fresh-2"],
        )
    assert rdb.lrange(keys.pending, 0, -1) == [first.encode()]
    assert rdb.get(keys.idempotency("fresh-1")) is None
    assert rdb.dump(keys.idempotency("signup-7")) == recorded
    # A key written before keys were bound to their event (a bare id) still answers its id.
    rdb.set(keys.idempotency("older"), "msg_older", ex=60)
    assert publisher.user_created(changed, idempotency_key="older") == "msg_older"
    assert rdb.llen(keys.pending) == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "naïve"])
def test_a_bad_idempotency_key_is_refused_and_nothing_is_recorded(
    publisher: Publisher, rdb: redis.Redis, key: str
) -> None:
    with pytest.raises(InvalidEventError, match="idempotency_key: must be 1 to 200 printable"):
        publisher.user_created(sample_user(), idempotency_key=key)
    assert rdb.dbsize() == 0


def test_redis_down_is_a_project_error_and_a_retry_with_the_key_publishes_once(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    settings = ProducerSettings(redis_url=server.url, visibility_timeout_s=3)
    try:
        with Publisher(settings) as publisher:
            first = publisher.user_created(sample_user(), idempotency_key="k1")
            server.stop(kill=True)
            with pytest.raises(UnavailableError, match="Redis is unavailable") as err:
                publisher.user_created(sample_user(), idempotency_key="k2")
            assert err.value.status == 503
            assert server.url not in str(err.value)
            server.start()
            second = publisher.user_created(sample_user(), idempotency_key="k2")
            assert publisher.user_created(sample_user(), idempotency_key="k1") == first
        client = redis.Redis.from_url(server.url)
        assert client.lrange(Keys().pending, 0, -1) == [first.encode(), second.encode()]
        client.close()
    finally:
        server.stop(kill=True)


def test_the_cli_takes_an_idempotency_key(
    deployment: Deployment, rdb: redis.Redis, tmp_path: Path
) -> None:
    deployment.subscriber("s", "http://127.0.0.1:9/s")
    args = ["publish", "reseller.user.created", "--idempotency-key", "cli-1"]
    first = deployment.cli(*args, "--sample")
    second = deployment.cli(*args, "--sample")
    assert first.returncode == second.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    # The same key with other data: refused in one line, naming neither the key nor the data.
    data = tmp_path / "user.json"
    data.write_text(json.dumps({**sample_user(), "email": "other-31b6@example.com"}))
    other = deployment.cli(*args, "--data", str(data))
    assert (other.returncode, other.stdout) == (2, "")
    assert other.stderr.startswith("error: idempotency_key: already used for a different event")
    assert len(other.stderr.splitlines()) == 1
    assert "31b6" not in other.stderr
    assert "cli-1" not in other.stderr
    assert rdb.llen(Keys().pending) == 1


def test_ping_prepares_the_first_message_without_publishing_anything(
    publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    publisher.ping()
    assert rdb.keys(f"{keys.prefix}*") == []  # no event, no trigger, no message
    event_id = publisher.user_created(sample_user())
    assert rdb.lrange(keys.pending, 0, -1) == [event_id.encode()]
    assert rdb.llen(keys.queue) == 1  # its trigger went as usual
