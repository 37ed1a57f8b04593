"""Whatever lands on the queues, the worker records what it cannot use and keeps delivering.

One worker serves the whole module. Each test pushes one stray entry straight onto a queue,
waits for its record in ``dlq messages`` (found by a token of its own, so the order of the tests
does not matter), then publishes a real event and waits for the receiver to get it.
"""

from __future__ import annotations

import base64
import json
import pickle
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import DELIVER_TASK, DISPATCH_TASK, PUBLISH_TASK, Keys
from reseller_webhooks.worker.cli import commands as cli
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import Deployment, WorkerProcess, every_value, wait_until


def envelope(
    body: bytes, content_type: str = "application/json", task: str = DISPATCH_TASK, tag: str = ""
) -> dict[str, Any]:
    """A message in kombu's Redis wire format, as another producer might write it."""
    tag = tag or str(uuid.uuid4())
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {"task": task, "id": tag, "lang": "py"},
        "properties": {
            "body_encoding": "base64",
            "delivery_info": {"exchange": "rw.deliveries", "routing_key": "rw.deliveries"},
            "delivery_mode": 2,
            "delivery_tag": tag,
            "priority": 0,
        },
    }


def task_body(args: Any, kwargs: Any = None) -> bytes:
    """Celery's protocol 2 body: ``[args, kwargs, embed]``."""
    return json.dumps([args, kwargs or {}, {}]).encode()


def without(message: dict[str, Any], *path: str) -> dict[str, Any]:
    """``message`` with the field at ``path`` removed."""
    node = message
    for name in path[:-1]:
        node = node[name]
    del node[path[-1]]
    return message


def dumps(message: Any) -> bytes:
    return json.dumps(message).encode()


def trigger(token: str) -> dict[str, Any]:
    """A valid trigger whose envelope shows ``token`` (the body is base64)."""
    return envelope(task_body([[f"msg_{token}"]]), tag=token)


def badly_encoded(token: str) -> bytes:
    message = trigger(token)
    message["body"] = f"!!{token}!"  # not base64: wrong padding
    return dumps(message)


@dataclass(frozen=True)
class Case:
    make: Callable[[str], bytes]  # the raw entry, from a token (digits) the record shows
    reason: str  # what the record's reason says ("" where the task decides the wording)
    retry_queue: bool = False
    # Where the task writes the record, it may leave the arguments (and the token) out: then
    # the record is the first one for this task written after the push.
    task: str | None = None


CASES = {
    # Not a kombu message at all: the transport drops it before kombu parses it.
    "not-json": Case(lambda t: b"\x00\x01\xff not json " + t.encode(), "not JSON"),
    "json-array": Case(lambda t: dumps([[f"msg_{t}"], {}, {}]), "a JSON array", True),
    "json-number": Case(lambda t: t.encode(), "a JSON number"),
    "json-string": Case(lambda t: dumps(f"msg_{t}"), "a JSON string"),
    "json-object-not-an-envelope": Case(
        lambda t: dumps({"task": DISPATCH_TASK, "args": [[f"msg_{t}"]]}), "field 'properties'"
    ),
    "envelope-without-properties": Case(
        lambda t: dumps(without(trigger(t), "properties")),
        "field 'properties'",
    ),
    "envelope-without-delivery-info": Case(
        lambda t: dumps(without(trigger(t), "properties", "delivery_info")),
        "field 'properties.delivery_info'",
    ),
    "envelope-without-headers": Case(
        lambda t: dumps(without(trigger(t), "headers")),
        "field 'headers'",
    ),
    "body-not-base64": Case(badly_encoded, "not valid base64", True),
    # A kombu message, but not a task this worker can run: Celery's consumer drops it.
    "body-not-json": Case(
        lambda t: dumps(envelope(b"\x00\x01 not json " + t.encode())), "cannot decode"
    ),
    "pickle": Case(
        lambda t: dumps(
            envelope(pickle.dumps(([[f"msg_{t}"]], {}, {})), "application/x-python-serialize")
        ),
        "untrusted content of type pickle",
        True,
    ),
    "yaml": Case(
        lambda t: dumps(envelope(f"- [msg_{t}]\n".encode(), "application/x-yaml")),
        "untrusted content of type yaml",
    ),
    "unknown-task": Case(
        lambda t: dumps(envelope(task_body([[f"msg_{t}"]]), task="webhooks.nonexistent")),
        "unknown task name",
    ),
    "no-task-name": Case(
        lambda t: dumps(without(trigger(t), "headers", "task")),
        "not a task message",
    ),
    "no-task-id": Case(
        lambda t: dumps(without(trigger(t), "headers", "id")),
        "cannot be run as a task",
    ),
    "body-not-args-kwargs-embed": Case(
        lambda t: dumps(envelope(dumps({"event_ids": [f"msg_{t}"]}))),
        "must be [args, kwargs, embed]",
    ),
    "kwargs-not-an-object": Case(
        lambda t: dumps(envelope(dumps([[[f"msg_{t}"]], [], {}]))), "kwargs must be an object"
    ),
    # Celery unpacks this one in the pool thread, where the error was swallowed: the message
    # stayed unacknowledged, held a prefetch slot and came back after every visibility timeout.
    "embed-not-an-object": Case(
        lambda t: dumps(envelope(dumps([[[f"msg_{t}"]], {}, "x"]))), "embed must be an object"
    ),
    "task-name-not-a-string": Case(
        lambda t: dumps(envelope(task_body([[f"msg_{t}"]]), task=7)),  # type: ignore[arg-type]
        "unknown task name",
        True,
    ),
    # A task message with arguments no signature takes: the task records it.
    "dict-argument": Case(
        lambda t: dumps(envelope(task_body([{"event_ids": t}]))), "", task=DISPATCH_TASK
    ),
    "three-ints": Case(
        lambda t: dumps(envelope(task_body([int(t), 2, 3]), task=DELIVER_TASK)),
        "",
        True,
        task=DELIVER_TASK,
    ),
    "unknown-kwargs": Case(
        lambda t: dumps(envelope(task_body([[f"msg_{t}"]], {f"bogus_{t}": 1}))),
        "",
        task=DISPATCH_TASK,
    ),
}


@pytest.fixture(scope="module")
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as rcv:
        yield rcv


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, rdb: redis.Redis
) -> Iterator[Deployment]:
    dep = Deployment(tmp_path=tmp_path_factory.mktemp("bad-messages"), redis_url=redis_server.url)
    yield dep
    dep.kill_all()


@pytest.fixture(scope="module")
def worker(deployment: Deployment, receiver: Receiver) -> WorkerProcess:
    deployment.subscriber("s", f"{receiver.url}/s")
    return deployment.start_worker()


@pytest.fixture(scope="module")
def publisher(redis_server: RedisServer, rdb: redis.Redis) -> Iterator[Publisher]:
    with Publisher(ProducerSettings(redis_url=redis_server.url, visibility_timeout_s=3)) as pub:
        yield pub


def recorded(
    rdb: redis.Redis, keys: Keys, token: str, task: str | None = None, since_ms: int = 0
) -> dict[str, Any] | None:
    """The record showing ``token`` (in its reason or shape: a record keeps no body); else the
    oldest one since ``since_ms`` (for ``task`` when given). Each test here pushes one entry
    and waits for its record before the next."""
    records = [json.loads(raw) for raw in rdb.lrange(keys.bad_messages, 0, -1)]
    for record in records:
        if token in json.dumps(record):
            return dict(record)
    later = [
        r
        for r in records
        if since_ms and (task is None or r["task"] == task) and r["at_ms"] >= since_ms
    ]
    return dict(later[-1]) if later else None


@pytest.mark.parametrize("kind", list(CASES))
def test_a_stray_message_is_recorded_and_the_worker_keeps_delivering(
    kind: str,
    worker: WorkerProcess,
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    case = CASES[kind]
    token = str(uuid.uuid4().int)  # digits, so that it can be a number too
    queue = keys.retry_queue if case.retry_queue else keys.queue
    since_ms = int(time.time() * 1000)
    rdb.lpush(queue, case.make(token))

    record = wait_until(
        lambda: recorded(rdb, keys, token, case.task, since_ms), what=f"a record of {kind}"
    )
    assert case.reason in record["reason"]
    assert record["reason"]
    assert worker.process.poll() is None, worker.log()[-3000:]
    assert rdb.llen(queue) == 0  # taken off the queue ...
    wait_until(lambda: not rdb.hlen("unacked"), what="no unacknowledged message")  # ... for good

    event_id = publisher.user_created(sample_user())
    wait_until(
        lambda: any(r.headers["webhook-id"] == event_id for r in receiver.received),
        what="the event published after the stray entry",
    )
    assert worker.process.poll() is None

    # The command itself, in-process (a subprocess would start Python for each of these tests).
    run = CliRunner().invoke(cli.main, ["dlq", "messages"], env={"REDIS_URL": deployment.redis_url})
    assert run.exit_code == 0, run.output
    listed = [json.loads(line) for line in run.stdout.splitlines()]
    assert record in listed


def test_a_stray_broadcast_is_recorded_and_the_worker_keeps_delivering(
    worker: WorkerProcess, receiver: Receiver, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    """Celery's remote control reaches every worker by pub/sub; kombu parses it, then we screen."""
    token = str(uuid.uuid4().int)
    since_ms = int(time.time() * 1000)
    assert rdb.publish("/0.celery.pidbox", dumps([token, "ping"])) >= 1  # our worker listens

    record = wait_until(
        lambda: recorded(rdb, keys, token, since_ms=since_ms), what="a record of the broadcast"
    )
    assert "a JSON array" in record["reason"]
    event_id = publisher.user_created(sample_user())
    wait_until(lambda: any(r.headers["webhook-id"] == event_id for r in receiver.received))
    assert worker.process.poll() is None


def test_a_corrupt_unacked_entry_does_not_stop_a_worker_at_start(
    worker: WorkerProcess,
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    """kombu restores its ``unacked`` hash when a worker starts; it raised on an entry it could
    not parse, so every worker exited at start."""
    tokens = [str(uuid.uuid4().int) for _ in range(2)]
    entries = {tokens[0]: f"not json {tokens[0]}", tokens[1]: dumps([[tokens[1]], "x", "y"])}
    long_ago = time.time() - 3600  # past any visibility timeout
    since_ms = int(time.time() * 1000)
    rdb.hset("unacked", mapping=entries)
    rdb.zadd("unacked_index", dict.fromkeys(entries, long_ago))

    def unacked_records() -> set[str]:
        records = [json.loads(raw) for raw in rdb.lrange(keys.bad_messages, 0, -1)]
        return {r["reason"].split(":")[0] for r in records if r["at_ms"] >= since_ms}

    second = deployment.start_worker()  # restores what is due as it starts
    try:
        wait_until(
            lambda: {"unacked entry not JSON", "not a message envelope"} <= unacked_records(),
            what="a record of each unacked entry",
        )
        assert not rdb.hexists("unacked", tokens[0])
        assert not rdb.zscore("unacked_index", tokens[0])
        event_id = publisher.user_created(sample_user())
        wait_until(lambda: any(r.headers["webhook-id"] == event_id for r in receiver.received))
        assert second.process.poll() is None
        assert worker.process.poll() is None
    finally:
        second.stop()
        deployment.workers.remove(second)


def test_a_broken_publish_message_is_recorded_by_its_shape_never_its_personal_data(
    worker: WorkerProcess, deployment: Deployment, rdb: redis.Redis, keys: Keys
) -> None:
    """A foreign Celery client publishing an event (``webhooks.publish``) with a broken
    message: ``dlq messages`` and every Redis key hold neither the email nor the password."""
    email = f"jane.{uuid.uuid4().hex}@example.com"
    password = "pw-" + uuid.uuid4().hex
    data = {"id": "usr_1", "email": email, "password": password}
    kwargs = {"event": "reseller.user.created", "data": data}
    broken = {
        # does not decode as its content type
        "not-json": envelope(b"{" + dumps(kwargs), task=PUBLISH_TASK),
        # decodes, but is not [args, kwargs, embed]
        "not-a-task-body": envelope(dumps(kwargs), task=PUBLISH_TASK),
        # not even a kombu envelope: dropped by the transport screen
        "not-an-envelope": {"task": PUBLISH_TASK, "kwargs": kwargs},
    }
    for kind, message in broken.items():
        since_ms = int(time.time() * 1000)
        rdb.lpush(keys.queue, dumps(message))
        record = wait_until(
            lambda: recorded(rdb, keys, uuid.uuid4().hex, since_ms=since_ms),  # noqa: B023
            what=f"a record of {kind}",
        )
        assert record["shape"]["bytes"] > 0, kind
        if kind != "not-an-envelope":
            assert record["task"] == PUBLISH_TASK
            assert record["shape"]["content_type"] == "application/json"
            assert record["shape"]["task_id"] == message["headers"]["id"]
    wait_until(lambda: not rdb.hlen("unacked"), what="no unacknowledged message")

    run = CliRunner().invoke(cli.main, ["dlq", "messages"], env={"REDIS_URL": deployment.redis_url})
    assert run.exit_code == 0, run.output
    assert "task body: must be [args, kwargs, embed]" in run.stdout
    stored = every_value(rdb)
    for secret in (email, password):
        assert secret not in run.stdout
        assert not any(secret.encode() in v for v in stored), secret
    assert email not in worker.log()
    assert worker.process.poll() is None


def test_worker_start_warns_when_the_visibility_timeout_is_short(worker: WorkerProcess) -> None:
    # Visibility timeout 3 s here, subscribers time out after 15 s (the default).
    assert (
        "WARNING reseller_webhooks.worker.queue.visibility: WEBHOOKS_VISIBILITY_TIMEOUT_S is 3 s, "
        "shorter than the longest subscriber timeout_s (15 s)"
    ) in worker.log()


def test_a_real_fault_stops_the_worker_with_a_failure_exit_code(
    tmp_path: Path, redis_server: RedisServer, rdb: redis.Redis, receiver: Receiver
) -> None:
    """A queue key of the wrong type: every BRPOP fails, Celery stops; a supervisor must see it."""
    prefix = f"broken{random.randrange(10**6)}"
    dep = Deployment(
        tmp_path=tmp_path,
        redis_url=redis_server.url,
        settings={"WEBHOOKS_KEY_PREFIX": prefix, "WEBHOOKS_EMBEDDED_SCHEDULER": "false"},
    )
    dep.subscriber("s", f"{receiver.url}/s")
    rdb.set(Keys(prefix).retry_queue, "not a list")
    try:
        process = dep.start_worker(wait=False)
        wait_until(lambda: process.process.poll() is not None, timeout_s=60, what="worker exit")
        assert "Unrecoverable error" in process.log()
        assert "WRONGTYPE" in process.log()
        assert process.process.returncode == 1
    finally:
        dep.kill_all()
        rdb.delete(Keys(prefix).retry_queue)


def test_a_worker_stopped_on_purpose_exits_zero(
    tmp_path: Path, redis_server: RedisServer, rdb: redis.Redis, receiver: Receiver
) -> None:
    dep = Deployment(
        tmp_path=tmp_path,
        redis_url=redis_server.url,
        settings={"WEBHOOKS_KEY_PREFIX": f"calm{random.randrange(10**6)}"},
    )
    dep.subscriber("s", f"{receiver.url}/s")
    process = dep.start_worker()
    process.stop()  # SIGTERM: warm shutdown
    assert process.process.returncode == 0


def test_a_record_that_cannot_be_written_does_not_stop_the_worker(
    tmp_path: Path, redis_server: RedisServer, rdb: redis.Redis, receiver: Receiver
) -> None:
    """The list of records holds a string: each record fails (WRONGTYPE); delivery goes on."""
    other = Keys(f"norecord{random.randrange(10**6)}")
    dep = Deployment(
        tmp_path=tmp_path,
        redis_url=redis_server.url,
        settings={"WEBHOOKS_KEY_PREFIX": other.prefix},
    )
    dep.subscriber("s", f"{receiver.url}/s")
    rdb.set(other.bad_messages, "not a list")
    settings = ProducerSettings(
        redis_url=redis_server.url, key_prefix=other.prefix, visibility_timeout_s=3
    )
    try:
        process = dep.start_worker()
        rdb.lpush(other.queue, b"not json")  # the transport's record
        rdb.lpush(other.queue, dumps(envelope(b"\x80\x04.", "application/x-python-serialize")))
        with Publisher(settings) as pub:
            event_id = pub.user_created(sample_user())
        wait_until(lambda: any(r.headers["webhook-id"] == event_id for r in receiver.received))
        wait_until(lambda: process.log().count("could not record") == 2, what="two failed records")
        assert process.process.poll() is None
        assert rdb.llen(other.queue) == 0
    finally:
        dep.kill_all()
        rdb.delete(other.bad_messages)
