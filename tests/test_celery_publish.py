"""``webhooks.publish``: a producer that speaks Celery's protocol publishes by sending one task.

Here the client is kombu/Celery sending by name with kwargs, and writing the arguments'
representation as any client may (with the personal data in it): the worker validates and
records the event as ``Publisher.publish`` does, refuses a bad one once with a recorded reason,
and what Flower reads (the task events) never holds the data.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from reseller_webhooks.producers.errors import InvalidEventError
from reseller_webhooks.producers.publisher import celery_client
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import PUBLISH_TASK, Keys
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.queue.publishing import read_message
from tests.helpers import Deployment, new_secret, wait_until

USER = {**sample_user(), "id": "usr_celery", "email": "celery.user@example.com"}


@pytest.mark.parametrize(
    ("args", "kwargs", "problems"),
    [
        ((), {"event": "reseller.user.created", "data": USER}, []),
        (("reseller.user.created", USER, "k-1"), {}, []),
        (("reseller.user.created",), {"data": USER, "idempotency_key": "k"}, []),
        ((), {"event": "x", "data": USER}, ["event: unknown event type 'x'"]),
        ((), {"event": "reseller.user.created"}, ["data: field required"]),
        (
            (),
            {"event": "reseller.user.created", "data": USER, "idempotency_key": "a b"},
            ["idempotency_key: must be 1 to 200"],
        ),
        (("reseller.user.created",), {"event": "x", "data": USER}, ["event: given twice"]),
        ((), {"event": "reseller.user.created", "data": USER, "user": 1}, ["user: unknown field"]),
        ((1, 2, 3, 4), {}, ["args: at most 3"]),
        (
            (),
            {"event": "reseller.user.created", "data": {**USER, "email": "no"}},
            ["data.email: value is not a valid email address"],
        ),
    ],
)
def test_what_a_publish_message_may_carry(
    args: tuple[Any, ...], kwargs: dict[str, Any], problems: list[str]
) -> None:
    if not problems:
        event, _ = read_message(args, kwargs)
        assert event.data.id == "usr_celery"
        return
    with pytest.raises(InvalidEventError) as refused:
        read_message(args, kwargs)
    assert len(refused.value.problems) == len(problems)
    for line, expected in zip(refused.value.problems, problems, strict=True):
        assert line.startswith(expected), line
    assert "celery.user@example.com" not in str(refused.value)


def task_events(
    app: Celery, seen: list[dict[str, Any]], ready: threading.Event, stop: threading.Event
) -> None:
    """Every task event the workers send, as Flower receives them."""
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": seen.append})
        with receiver.consumer_context(wakeup=True) as (conn, _, _):
            ready.set()
            while not stop.is_set():
                try:
                    conn.drain_events(timeout=0.25)
                except TimeoutError:
                    continue


@pytest.fixture
def events_seen(redis_url: str) -> Iterator[list[dict[str, Any]]]:
    app = celery_client(ProducerSettings(redis_url=redis_url))
    seen: list[dict[str, Any]] = []
    ready, stop = threading.Event(), threading.Event()
    listener = threading.Thread(target=task_events, args=(app, seen, ready, stop), daemon=True)
    listener.start()
    assert ready.wait(30), "the event listener did not start"
    yield seen
    stop.set()
    listener.join(timeout=10)
    app.close()


@pytest.mark.slow
def test_a_celery_client_publishes_and_flower_never_sees_the_data(
    deployment: Deployment, rdb: redis.Redis, keys: Keys, events_seen: list[dict[str, Any]]
) -> None:
    secret = new_secret()
    with Receiver(secret=secret) as receiver:
        deployment.secrets["SECRET_CRM"] = secret
        deployment.config["subscribers"] = [
            {
                "id": "crm",
                "url": f"{receiver.url}/hook",
                "secret_env": "SECRET_CRM",
                "events": ["reseller.user.*"],
            },
        ]
        deployment.start_worker()
        # As a client in another language: no task-sent events, and whatever it writes as the
        # arguments' representation (here the data itself).
        client = celery_client(ProducerSettings(redis_url=deployment.redis_url))
        client.conf.task_send_sent_event = False
        good = {"event": "reseller.user.created", "data": USER, "idempotency_key": "celery-1"}
        bad = {"event": "reseller.user.removed", "data": {**USER, "email": "not-an-email"}}
        sent = [
            client.send_task(PUBLISH_TASK, kwargs=kw, queue=keys.queue, kwargsrepr=repr(kw)).id
            for kw in (good, good, bad)  # the same key twice
        ]

        def succeeded() -> set[str]:
            return {e["uuid"] for e in events_seen if e["type"] == "task-succeeded"}

        wait_until(lambda: set(sent) <= succeeded(), what="the three tasks done")
        wait_until(lambda: len(receiver.received) >= 1, what="the event delivered")
        client.close()
    (arrived,) = receiver.received
    assert arrived.verified
    assert arrived.json["event"] == "reseller.user.created"
    assert arrived.json["data"]["email"] == USER["email"]
    assert rdb.llen(keys.pending) == 0
    assert sum(1 for _ in rdb.scan_iter(match=keys.event("*"))) == 1  # the same key: once
    (record,) = list(map(json.loads, rdb.lrange(keys.bad_messages, 0, -1)))
    assert record["task"] == PUBLISH_TASK
    assert "event: unknown event type 'reseller.user.removed'" in record["reason"]
    assert "data.email: value is not a valid email address" in record["reason"]
    publish_events = [e for e in events_seen if e.get("uuid") in sent]
    received = [e for e in publish_events if e["type"] == "task-received"]
    assert len(received) == 3
    shown = json.dumps(publish_events)
    assert "celery.user@example.com" not in shown
    assert "not-an-email" not in shown
    assert all(e["kwargs"].endswith("'(redacted)', 'idempotency_key': ...}") for e in received)
    retried = [e for e in publish_events if e["type"] in {"task-retried", "task-failed"}]
    assert retried == []  # refused once, never retried
    log = deployment.workers[0].log()
    assert "celery.user@example.com" not in log
    assert f"{PUBLISH_TASK}[{sent[2]}] refused: event: unknown event type" in log
