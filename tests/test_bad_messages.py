"""Whatever lands on the queue, the worker records what it cannot use and keeps going."""

from __future__ import annotations

import base64
import json
import uuid

import redis
from celery import Celery

from producers.publisher import Publisher
from producers.wire import DELIVER_TASK, DISPATCH_TASK, Keys
from tests.conftest import Deployment, wait_until
from worker.cli import sample_user
from worker.receiver import Receiver


def raw_message(body: bytes, content_type: str, task: str = DISPATCH_TASK) -> bytes:
    """A message in kombu's Redis wire format, as another producer might write it."""
    tag = str(uuid.uuid4())
    return json.dumps(
        {
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
    ).encode()


def test_malformed_and_unknown_messages_are_dead_lettered_and_the_worker_goes_on(
    deployment: Deployment,
    receiver: Receiver,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber("s", f"{receiver.url}/s")
    worker = deployment.start_worker()
    sender = Celery(broker=deployment.redis_url, set_as_current=False)
    sender.send_task("webhooks.nonexistent", args=[["msg_x"]], queue=keys.queue)
    sender.send_task(DISPATCH_TASK, args=["not-a-list"], queue=keys.queue)
    sender.send_task(DELIVER_TASK, args=[{"id": 1}, "1"], queue=keys.queue)
    sender.send_task(DISPATCH_TASK, kwargs={"bogus": 1}, queue=keys.queue)
    rdb.lpush(keys.queue, raw_message(b"\x00\x01 not json", "application/json"))
    rdb.lpush(keys.queue, raw_message(b"{}", "application/x-python-serialize"))
    sender.close()

    wait_until(lambda: rdb.llen(keys.bad_messages) >= 6, what="six bad-message records")
    records = [json.loads(r) for r in rdb.lrange(keys.bad_messages, 0, -1)]
    reasons = " | ".join(r["reason"] for r in records)
    assert "unknown task name" in reasons
    assert "dispatch() takes 0 positional arguments" in reasons
    assert "arguments are not (subscriber id, slot token)" in reasons
    assert "unexpected keyword argument 'bogus'" in reasons
    assert "cannot decode" in reasons

    # Still alive and still delivering.
    event_id = publisher.user_created(sample_user())
    assert receiver.wait_for(1)[0].headers["webhook-id"] == event_id
    assert worker.process.poll() is None
    listed = deployment.cli("dlq", "messages")
    assert listed.stdout.count("\n") == len(records)
