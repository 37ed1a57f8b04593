"""The baselines, written the way most teams write a webhook sender first.

``naive_deliver``: one Celery task per delivery, the payload in the task arguments, one
``httpx.Client.post``, ``autoretry_for`` with backoff. ``noop``: a Celery task that only counts
itself (one Redis INCR), the queue's per-message ceiling. Both run in one worker process with the
same pool and concurrency as ours (``celery -A bench.naive worker -P threads -c 8``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

import httpx
import redis
from celery import Celery

BROKER = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bench.naive"
SECRET = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

app = Celery("naive", broker=BROKER, set_as_current=False)
app.conf.update(task_default_queue=QUEUE, task_ignore_result=True, worker_hijack_root_logger=False)
client = httpx.Client(timeout=15)
counter = redis.Redis.from_url(BROKER)


@app.task(
    name="bench.naive_deliver", autoretry_for=(httpx.HTTPError,), retry_backoff=True, max_retries=5
)
def naive_deliver(url: str, event_id: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload)
    timestamp = str(int(time.time()))
    digest = hmac.new(SECRET, f"{event_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    response = client.post(
        url,
        content=body,
        headers={
            "content-type": "application/json",
            "x-bench-id": event_id,
            "webhook-id": event_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        },
    )
    response.raise_for_status()


@app.task(name="bench.noop")
def noop() -> None:
    counter.incr("bench:noop")
