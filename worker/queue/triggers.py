"""Sending the triggers the scripts arm: the one place that turns them into Celery messages.

A deliver trigger names the subscriber and the slot it holds (``webhooks.deliver('acme', '17')``),
so Flower shows who is being served and nothing else. A failing subscriber's triggers go to the
retry queue, so dedicated first-attempt workers never wait on an endpoint that is down.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from reseller_webhooks.producers.wire import DELIVER_TASK, DISPATCH_TASK, Keys
from reseller_webhooks.worker.records.shapes import Trigger


def send_deliver(celery: Celery, keys: Keys, triggers: Sequence[Trigger]) -> None:
    for t in triggers:
        celery.send_task(
            DELIVER_TASK,
            args=[t.subscriber_id, t.token],
            queue=keys.retry_queue if t.failing else keys.queue,
        )


def send_dispatch(celery: Celery, keys: Keys) -> None:
    celery.send_task(DISPATCH_TASK, queue=keys.queue)
