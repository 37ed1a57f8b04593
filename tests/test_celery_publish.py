"""``webhooks.publish``: a producer that speaks Celery's protocol publishes by sending one task.

Here the client is kombu/Celery sending by name with kwargs, and writing the arguments'
representation as any client may (with the personal data in it): the worker validates and
records the event as ``Publisher.publish`` does, refuses a bad one once with a recorded reason,
and what Flower reads (the task events) never holds the data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from reseller_webhooks.producers.errors import InvalidEventError
from reseller_webhooks.producers.publisher import celery_client
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import PUBLISH_TASK, Keys
from reseller_webhooks.worker.devserver.receiver import Received, Receiver
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.queue.publishing import REDACTED_ARGS, REDACTED_KWARGS, read_message
from tests.helpers import IN_CI, ROOT, Deployment, new_secret, wait_until

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


@dataclass
class Stack:
    deployment: Deployment
    receiver: Receiver
    redis: redis.Redis
    keys: Keys
    events: list[dict[str, Any]]

    def arrived(self, user_id: str) -> list[Received]:
        return [r for r in self.receiver.received if r.json["data"]["id"] == user_id]

    def refusal(self, task_id: str) -> dict[str, Any]:
        records = map(json.loads, self.redis.lrange(self.keys.bad_messages, 0, -1))
        (record,) = [r for r in records if r["shape"] == {"task_id": task_id}]
        return dict(record)

    def shown(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """The task events Flower reads about these tasks."""
        return [e for e in self.events if e.get("uuid") in task_ids]

    def succeeded(self) -> set[str]:
        return {e["uuid"] for e in self.events if e["type"] == "task-succeeded"}


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker delivering to a verifying receiver, and a listener of its task events."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    app = celery_client(ProducerSettings(redis_url=redis_server.url))
    seen: list[dict[str, Any]] = []
    ready, stop = threading.Event(), threading.Event()
    listener = threading.Thread(target=task_events, args=(app, seen, ready, stop), daemon=True)
    listener.start()
    assert ready.wait(30), "the event listener did not start"
    deployment = Deployment(tmp_path=tmp_path_factory.mktemp("celery"), redis_url=redis_server.url)
    secret = new_secret()
    with Receiver(secret=secret) as receiver:
        deployment.subscriber("crm", f"{receiver.url}/hook", secret=secret)
        deployment.start_worker()
        yield Stack(deployment, receiver, client, Keys("rw"), seen)
        deployment.kill_all()
    stop.set()
    listener.join(timeout=10)
    app.close()
    client.close()


def check_private(stack: Stack, task_ids: list[str], *private: str) -> None:
    """Flower (the task events) and the worker's log never show these values; a refused
    task succeeded once, never retried."""
    shown = stack.shown(task_ids)
    received = [e for e in shown if e["type"] == "task-received"]
    assert len(received) == len(task_ids)
    assert all(e["kwargs"] == REDACTED_KWARGS and e["args"] == REDACTED_ARGS for e in received)
    assert [e for e in shown if e["type"] in {"task-retried", "task-failed"}] == []
    text, log = json.dumps(shown), stack.deployment.workers[0].log()
    for value in private:
        assert value not in text
        assert value not in log


def test_a_celery_client_publishes_and_flower_never_sees_the_data(stack: Stack) -> None:
    # As a client in another language: no task-sent events, and whatever it writes as the
    # arguments' representation (here the data itself).
    client = celery_client(ProducerSettings(redis_url=stack.deployment.redis_url))
    client.conf.task_send_sent_event = False
    good = {"event": "reseller.user.created", "data": USER, "idempotency_key": "celery-1"}
    bad = {"event": "reseller.user.removed", "data": {**USER, "email": "not-an-email"}}
    sent = [
        client.send_task(PUBLISH_TASK, kwargs=kw, queue=stack.keys.queue, kwargsrepr=repr(kw)).id
        for kw in (good, good, bad)  # the same key twice
    ]
    client.close()
    wait_until(lambda: set(sent) <= stack.succeeded(), what="the three tasks done")
    wait_until(lambda: stack.arrived(USER["id"]), what="the event delivered")
    (arrived,) = stack.arrived(USER["id"])  # the same key: recorded once
    assert arrived.verified
    assert arrived.json["data"]["email"] == USER["email"]
    reason = stack.refusal(sent[2])["reason"]
    assert "event: unknown event type 'reseller.user.removed'" in reason
    assert "data.email: value is not a valid email address" in reason
    check_private(stack, sent, USER["email"], "not-an-email")
    log = stack.deployment.workers[0].log()
    assert f"{PUBLISH_TASK}[{sent[2]}] refused: event: unknown event type" in log


CELERY_NODE = "celery-node@0.5.9"
NODE_CLIENT = ROOT / "tests" / "clients" / "celery_publish.cjs"


def celery_node(cache: pytest.Cache) -> Path:
    """``node_modules`` with celery-node, installed once into pytest's cache (npm is asked only
    when the cache lacks it); skipped where npm cannot install it, failing under CI=true."""
    folder = cache.mkdir(CELERY_NODE.replace("@", "-"))
    modules = folder / "node_modules"
    if (modules / "celery-node" / "package.json").exists():
        return modules
    npm = shutil.which("npm")
    installed = npm and subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
            str(folder),
            CELERY_NODE,
        ],
        capture_output=True,
        timeout=300,
    )
    if not installed or installed.returncode != 0:
        reason = installed.stderr.decode()[-500:] if installed else "npm is not installed"
        if IN_CI:
            pytest.fail(f"CI=true and {CELERY_NODE} could not be installed: {reason}")
        pytest.skip(f"{CELERY_NODE} could not be installed: {reason}")
    return modules


@pytest.mark.slow
def test_celery_node_publishes_through_the_celery_path(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    node = shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("CI=true and node is not installed")
        pytest.skip("node is not installed")
    modules = celery_node(request.config.cache)
    user = {**USER, "email": "node.user@example.com"}
    done = subprocess.run(
        [node, str(NODE_CLIENT), stack.deployment.redis_url, stack.keys.queue, "20", "cn"],
        capture_output=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(modules), "SAMPLE_USER": json.dumps(user)},
    )
    assert done.returncode == 0, done.stderr.decode()
    sent = json.loads(done.stdout)
    wait_until(lambda: set(sent) <= stack.succeeded(), what="every celery-node task done")
    wanted = [f"cn-{n}" for n in range(20)]
    wait_until(lambda: all(stack.arrived(u) for u in wanted), what="every event delivered")
    assert all(len(stack.arrived(u)) == 1 and stack.arrived(u)[0].verified for u in wanted)
    assert "event: unknown event type" in stack.refusal(sent[-1])["reason"]
    assert stack.arrived("cn-bad") == []
    check_private(stack, sent, user["email"])
