"""Operational events: decided where the state changes (the finish script), sent once per
incident through the ordinary pipeline, never to the subscriber they are about."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from standardwebhooks.webhooks import Webhook

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.user import format_timestamp
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.config.subscribers import parse_config
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.operational_events import OPERATIONAL_EVENT_TYPES
from reseller_webhooks.worker.records.shapes import Finish, Route, iso_ms
from reseller_webhooks.worker.records.store import Store
from tests.helpers import ROUTES, Deployment, Script, settled, wait_until


def pending_events(rdb: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """The operational events recorded so far, oldest first (body parsed, plus 'about')."""
    out = []
    for key in rdb.scan_iter(match=keys.event("*")):
        record = rdb.hgetall(key)
        if record[b"type"].startswith(b"webhooks."):
            body = json.loads(record[b"body"])
            out.append({"about": record[b"about"].decode(), "seq": key.split(b"n")[-1], **body})
    out.sort(key=lambda e: int(e.pop("seq")))
    return out


def attempt_once(store: Store, publisher: Publisher, outcome: str, **extra: Any) -> None:
    """Publish, fan out and record one attempt of the event to subscriber 's'."""
    publisher.user_created(sample_user())
    drained = store.drain(ROUTES, batch=100, now_iso="2026-01-01T00:00:00Z")
    token = drained.triggers[0].token if drained.triggers else ""
    if not token:  # a slot is still live from an earlier event
        token = store.redis.zrange(store.keys.slots("s"), 0, 0)[0].decode()
    batch = store.claim("s", token, most=10, lease_ms=10_000, bound=4)
    assert batch is not None
    letter = {"event_type": "reseller.user.created", "body": "{}"}
    result = Finish(outcome, {"outcome": outcome}, dead_letter=letter, **extra)
    assert store.finish([(c, result) for c in batch.claims]) == [True] * len(batch.claims)


@pytest.mark.parametrize(
    "ms",
    [0, 951782400000, 1709208000123, 1767225599999, 4102444800000, 1582934400500],
)
def test_the_scripts_timestamps_are_rfc3339_utc(ms: int) -> None:
    expected = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    assert iso_ms(ms) == expected.replace("+00:00", "Z")
    assert format_timestamp(datetime.fromtimestamp(ms / 1000, UTC))[:19] == expected[:19]


def test_failing_once_per_incident_then_recovered_once(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    long = {"delay_ms": 0, "disable_after_ms": 10**9}
    for _ in range(2):
        attempt_once(store, publisher, "dead", **long)
    assert [e["event"] for e in pending_events(rdb, keys)] == ["webhooks.delivery.dead"] * 2
    for _ in range(3):  # the 3rd failure in a row announces the incident, the 4th and 5th not
        attempt_once(store, publisher, "dead", **long)
    kinds = [e["event"] for e in pending_events(rdb, keys)]
    assert kinds.count("webhooks.subscriber.failing") == 1
    failing = next(e for e in pending_events(rdb, keys) if e["event"].endswith("failing"))
    assert failing["about"] == "s"
    assert failing["data"]["subscriberId"] == "s"
    assert failing["data"]["consecutiveFailures"] == 3
    assert failing["triggeredAt"].endswith("Z")
    attempt_once(store, publisher, "delivered")
    attempt_once(store, publisher, "delivered")
    kinds = [e["event"] for e in pending_events(rdb, keys)]
    assert kinds.count("webhooks.subscriber.recovered") == 1
    assert kinds.count("webhooks.delivery.dead") == 5
    assert rdb.hget(keys.subscriber_state("s"), "failures") is None  # the streak ended


def test_a_dead_delivery_is_announced_with_its_fields(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    attempt_once(store, publisher, "gone", reason="subscriber gone: HTTP 410")
    events = {e["event"]: e for e in pending_events(rdb, keys)}
    assert set(events) == {"webhooks.subscriber.disabled", "webhooks.delivery.dead"}
    assert events["webhooks.subscriber.disabled"]["data"] == {
        "subscriberId": "s",
        "reason": "subscriber gone: HTTP 410",
    }
    dead = events["webhooks.delivery.dead"]["data"]
    (did,) = [m.decode() for m in rdb.zrange(keys.dead, 0, -1)]
    assert dead == {
        "subscriberId": "s",
        "deliveryId": did,
        "eventId": did.split(":")[0],
        "eventType": "reseller.user.created",
        "attempts": 1,
        "reason": "subscriber gone: HTTP 410",
    }


def test_an_operational_event_skips_the_subscriber_it_is_about(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    attempt_once(
        store, publisher, "dead", reason="permanent failure: HTTP 400", disable_after_ms=10**9
    )
    (dead,) = pending_events(rdb, keys)
    routes = {t: [Route("s", False, False), Route("ops", False, False)] for t in ROUTES}
    routes["webhooks.delivery.dead"] = [Route("s", True, False), Route("ops", True, False)]
    drained = store.drain(routes, batch=100, now_iso="x")
    assert drained.events == 1
    assert [t.subscriber_id for t in drained.triggers] == ["ops"]
    assert rdb.lrange(keys.ready("s"), 0, -1) == []
    assert len(rdb.lrange(keys.ready("ops"), 0, -1)) == 1
    assert dead["about"] == "s"


def test_patterns_may_name_operational_events() -> None:
    config = parse_config(
        {
            "subscribers": [
                {
                    "id": "ops",
                    "url": "https://ops.example.com/hook",
                    "events": ["webhooks.*"],
                    "secret": "whsec_" + "A" * 44,
                },
                {
                    "id": "crm",
                    "url": "https://crm.example.com/hook",
                    "events": ["reseller.user.*"],
                    "secret": "whsec_" + "A" * 44,
                },
            ]
        }
    )
    for kind in OPERATIONAL_EVENT_TYPES:
        assert [s.id for s in config.matching(kind)] == ["ops"]
    assert [s.id for s in config.matching("reseller.user.created")] == ["crm"]


# End to end: real worker processes, a real receiver, signatures verified.

FAST = {"schedule_s": [0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], "jitter": 0}


def verified(item: Received, secret: str) -> dict[str, Any]:
    """The body of a request whose Standard Webhooks signature checks out with ``secret``."""
    payload = Webhook(secret).verify(item.body, item.headers)
    assert isinstance(payload, dict)
    return payload


def ops_received(receiver: Receiver, path: str, secret: str) -> list[dict[str, Any]]:
    return [verified(r, secret) for r in receiver.received if r.path == path]


def test_a_failing_subscriber_is_announced_once_to_others_and_its_recovery_once(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.settings["WEBHOOKS_FAILING_AFTER"] = "3"
    # It subscribes to webhooks.* too: it must still never hear about itself.
    deployment.subscriber(
        "flaky", f"{receiver.url}/flaky", ["reseller.user.*", "webhooks.*"], retry=FAST
    )
    ops = deployment.subscriber("ops", f"{receiver.url}/ops", ["webhooks.*"])
    script.then("/flaky", Reply(503), Reply(503), Reply(503), Reply(503))
    deployment.start_worker()
    publisher.user_created(sample_user())

    wait_until(lambda: len(ops_received(receiver, "/ops", ops)) >= 2, what="failing, recovered")
    wait_until(lambda: settled(rdb, keys), what="settled")
    got = ops_received(receiver, "/ops", ops)
    assert [e["event"] for e in got] == [
        "webhooks.subscriber.failing",
        "webhooks.subscriber.recovered",
    ]
    assert got[0]["data"]["subscriberId"] == "flaky"
    assert got[0]["data"]["consecutiveFailures"] == 3
    assert got[1]["data"] == {"subscriberId": "flaky"}
    assert deployment.cli("subscribers", "status").stdout.split("\n")[0] == "flaky  ok"
    flaky = [r for r in receiver.received if r.path == "/flaky"]
    assert len(flaky) == 5
    assert {r.json["event"] for r in flaky} == {"reseller.user.created"}
    assert not any(r.json["event"].startswith("webhooks.") for r in flaky)


def test_410_announces_disabled_and_the_dead_delivery_once(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber("gone", f"{receiver.url}/gone", retry=FAST)
    ops = deployment.subscriber("ops", f"{receiver.url}/ops", ["webhooks.*"])
    script.always("/gone", Reply(410))
    deployment.start_worker()
    event_id = publisher.user_created(sample_user())

    wait_until(lambda: len(ops_received(receiver, "/ops", ops)) >= 2, what="two ops events")
    wait_until(lambda: settled(rdb, keys), what="settled")
    got = {e["event"]: e for e in ops_received(receiver, "/ops", ops)}
    assert len(ops_received(receiver, "/ops", ops)) == 2
    assert got["webhooks.subscriber.disabled"]["data"]["subscriberId"] == "gone"
    assert "410" in got["webhooks.subscriber.disabled"]["data"]["reason"]
    assert got["webhooks.delivery.dead"]["data"] == {
        "subscriberId": "gone",
        "deliveryId": f"{event_id}:gone",
        "eventId": event_id,
        "eventType": "reseller.user.created",
        "attempts": 1,
        "reason": got["webhooks.subscriber.disabled"]["data"]["reason"],
    }
    warnings = [line for line in deployment.workers[0].log().splitlines() if "WARNING" in line]
    assert any("webhooks.subscriber.disabled: subscriber gone" in line for line in warnings)
    dead_line = f"webhooks.delivery.dead: subscriber gone, delivery {event_id}:gone"
    assert any(dead_line in line for line in warnings)


def test_a_dead_operational_event_is_not_announced_again(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber("bad", f"{receiver.url}/bad", retry=FAST)
    deployment.subscriber("ops-a", f"{receiver.url}/ops-a", ["webhooks.*"], retry=FAST)
    ops_b = deployment.subscriber("ops-b", f"{receiver.url}/ops-b", ["webhooks.*"])
    script.always("/bad", Reply(400)).always("/ops-a", Reply(400))
    deployment.start_worker()
    publisher.user_created(sample_user())

    wait_until(lambda: rdb.zcard(keys.dead) == 2, what="both dead letters")
    wait_until(lambda: settled(rdb, keys), what="settled")
    got = ops_received(receiver, "/ops-b", ops_b)
    assert [(e["event"], e["data"]["subscriberId"]) for e in got] == [
        ("webhooks.delivery.dead", "bad")
    ]
    (letter,) = [
        json.loads(rdb.get(keys.dead_letter(m.decode())))
        for m in rdb.zrange(keys.dead, 0, -1)
        if m.decode().endswith(":ops-a")
    ]
    assert letter["event_type"] == "webhooks.delivery.dead"
