"""End to end through real processes: producer -> Redis -> worker -> loopback subscriber."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from standardwebhooks.webhooks import Webhook
from svix.webhooks import Webhook as SvixWebhook

from reseller_webhooks.producers.errors import InvalidEventError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import SEED_EXAMPLE, Deployment, attempt_log, settled, shape, wait_until


def by_path(rcv: Receiver) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in rcv.received:
        out.setdefault(item.path, []).append(item)
    return out


def test_events_reach_exactly_the_matching_subscribers_signed(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    secrets = {
        "all": deployment.subscriber(
            "all", f"{receiver.url}/all", ["reseller.user.*"], headers={"X-Tenant": "acme"}
        ),
        "created": deployment.subscriber(
            "created", f"{receiver.url}/created", ["reseller.user.created"]
        ),
        "updated": deployment.subscriber(
            "updated", f"{receiver.url}/updated", ["reseller.user.updated"]
        ),
    }
    deployment.subscriber("off", f"{receiver.url}/off", ["reseller.user.*"], enabled=False)
    deployment.start_worker()

    user = sample_user()
    created_id = publisher.user_created(user)
    updated_id = publisher.user_updated({**user, "firstName": "Augusta"})

    receiver.wait_for(4)
    wait_until(lambda: settled(rdb, keys), what="all deliveries finished")
    got = by_path(receiver)
    assert sorted(got) == ["/all", "/created", "/updated"]
    assert [r.headers["webhook-id"] for r in got["/all"]].count(created_id) == 1
    assert {r.headers["webhook-id"] for r in got["/all"]} == {created_id, updated_id}
    assert [r.headers["webhook-id"] for r in got["/created"]] == [created_id]
    assert [r.headers["webhook-id"] for r in got["/updated"]] == [updated_id]

    for path, items in got.items():
        secret = secrets[path.strip("/")]
        for item in items:
            # Both reference verifiers accept exactly the bytes and headers we sent.
            Webhook(secret).verify(item.body, item.headers)
            SvixWebhook(secret).verify(item.body, item.headers)
            assert item.headers["content-type"] == "application/json"
            assert item.headers["webhook-signature"].startswith("v1,")
    assert all(r.headers["x-tenant"] == "acme" for r in got["/all"])
    assert "x-tenant" not in got["/created"][0].headers

    updated = got["/updated"][0].json
    assert updated["event"] == "reseller.user.updated"
    assert updated["data"]["firstName"] == "Augusta"
    assert got["/created"][0].json["event"] == "reseller.user.created"


def test_body_matches_the_seed_schema_field_for_field(
    deployment: Deployment, receiver: Receiver, publisher: Publisher
) -> None:
    deployment.subscriber("s", f"{receiver.url}/s")
    deployment.start_worker()
    user = sample_user()
    user["organization"]["address"]["addressLine2"] = "Floor 2"
    user["organization"]["address"]["state"] = "Westminster"
    user["lastLoginAt"] = "2026-11-21T10:00:00Z"
    publisher.user_updated(user)

    body = receiver.wait_for(1)[0].json
    assert shape(body) == shape(SEED_EXAMPLE)
    assert body["data"] == user
    assert body["triggeredAt"].endswith("Z")


def test_publish_cli_prints_ids_and_refuses_bad_events_without_enqueuing(
    deployment: Deployment, receiver: Receiver, rdb: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    deployment.subscriber("s", f"{receiver.url}/s")
    bad = {**sample_user(), "email": "not-an-email", "password": "hunter22", "role": ""}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))

    result = deployment.cli("publish", "reseller.user.created", "--data", str(path))
    assert result.returncode == 2
    assert "data.email: value is not a valid email address" in result.stderr
    assert "data.password: not allowed" in result.stderr
    assert "data.role: String should have at least 1 character" in result.stderr
    assert "hunter22" not in result.stderr

    result = deployment.cli("publish", "reseller.user.deleted", "--sample")
    assert result.returncode == 2
    assert "event: unknown event type 'reseller.user.deleted'" in result.stderr

    batch = [
        {"event": "reseller.user.created", "data": sample_user()},
        {"event": "reseller.user.updated", "data": {**sample_user(), "twoFactorEnabled": "yes"}},
    ]
    result = deployment.cli("publish", "--batch", "-", input=json.dumps(batch).encode())
    assert result.returncode == 2
    assert "[1].data.twoFactorEnabled: Input should be a valid boolean" in result.stderr
    # Nothing half-valid was enqueued: no records, no triggers.
    assert rdb.dbsize() == 0

    result = deployment.cli("publish", "--batch", "-", input=json.dumps(batch[:1] * 3).encode())
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 3
    assert all(i.startswith("msg_") for i in ids)

    deployment.start_worker()
    assert sorted(r.headers["webhook-id"] for r in receiver.wait_for(3)) == sorted(ids)


def test_batch_publish_is_all_or_nothing(publisher: Publisher, rdb: redis.Redis) -> None:
    items = [{"event": "reseller.user.created", "data": sample_user()} for _ in range(3)]
    items[2] = {"event": "reseller.user.created", "data": sample_user(), "extra": 1}
    with pytest.raises(InvalidEventError) as err:
        publisher.publish_batch(items)
    assert err.value.problems == ["[2].extra: unknown field; an item is {event, data}"]
    assert rdb.dbsize() == 0


def test_queue_messages_carry_ids_only(publisher: Publisher, rdb: redis.Redis, keys: Keys) -> None:
    """What Flower shows of a task is its arguments: no names, emails or secrets there.

    And a dispatch trigger is shared: while one is pending, publishing sends no other message.
    """
    user = sample_user()
    first = publisher.user_created(user)
    second = publisher.user_created(user)
    assert rdb.lrange(keys.pending, 0, -1) == [first.encode(), second.encode()]
    raw = rdb.lrange(keys.queue, 0, -1)
    assert len(raw) == 1
    message = json.loads(raw[0])
    args = json.loads(base64.b64decode(message["body"]))[0]
    assert args == []
    text = raw[0].decode()
    for personal in (user["email"], user["firstName"], user["lastName"], user["name"]):
        assert personal not in text
    assert message["headers"]["task"] == "webhooks.dispatch"


def test_private_address_is_refused_without_the_flag(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    deployment.config["allow_private_networks"] = False
    deployment.subscriber("local", f"http://localhost:{receiver.url.rsplit(':', 1)[1]}/x")
    event_id = publisher.user_created(sample_user())
    worker = deployment.start_worker()
    wait_until(lambda: rdb.zcard(keys.dead) == 1, what="dead letter")
    letter = json.loads(rdb.get(keys.dead_letter(f"{event_id}:local")) or b"{}")
    assert "127.0.0.1" in letter["reason"]
    assert "allow_private_networks" in letter["reason"]
    assert receiver.received == []
    assert "refused address: localhost resolves to 127.0.0.1" in worker.log()
    assert "RefusedAddressError" not in worker.log()  # a reason, not a class name


def test_broken_subscribers_file_stops_the_worker_at_start(deployment: Deployment) -> None:
    deployment.subscriber("acme-crm", "ftp://hooks.example/x", ["reseller.usr.*"])
    worker = deployment.start_worker(wait=False)
    assert worker.process.wait(timeout=30) == 2
    log = worker.log()
    assert "subscriber 'acme-crm' field 'url': URL scheme should be 'http' or 'https'" in log
    assert "subscriber 'acme-crm' field 'events': pattern 'reseller.usr.*' matches no event" in log


def test_subscribers_check_prints_the_table_without_secrets(
    deployment: Deployment, receiver: Receiver
) -> None:
    inline = deployment.subscriber("acme-crm", "https://hooks.acme.example/r?token=t0k3n")
    deployment.config["subscribers"][0]["secret"] = inline
    del deployment.config["subscribers"][0]["secret_env"]
    from_env = deployment.subscriber("audit", f"{receiver.url}/a", ["reseller.user.updated"])
    result = deployment.cli("subscribers", "check")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "URL", "EVENTS", "ENABLED", "TIMEOUT", "SECRET", "ATTEMPTS"]
    assert lines[1].split() == [
        "acme-crm",
        "https://hooks.acme.example/r",
        "reseller.user.*",
        "yes",
        "15s",
        "inline",
        "10",
    ]
    assert lines[2].split()[5:7] == ["env", "SECRET_AUDIT"]
    assert "2 subscriber(s); private networks allowed" in result.stdout
    for secret in (inline, from_env):
        assert secret.removeprefix("whsec_")[:12] not in result.stdout + result.stderr
    assert "t0k3n" not in result.stdout


def test_credentials_in_a_subscriber_url_become_basic_auth_and_stay_out_of_the_log(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    url = receiver.url.replace("http://", "http://hook-user:p%40ss@") + "/basic?token=t0k"
    deployment.subscriber("basic", url)
    deployment.start_worker()
    event_id = publisher.user_created(sample_user())

    item = receiver.wait_for(1)[0]
    assert item.headers["authorization"] == "Basic " + base64.b64encode(b"hook-user:p@ss").decode()
    assert item.headers["user-agent"].startswith("reseller-webhooks/")
    wait_until(lambda: settled(rdb, keys), what="the delivery finished")
    logged = attempt_log(rdb, keys, f"{event_id}:basic")
    assert logged[0]["url"] == receiver.url + "/basic"  # no credentials, no query string
