"""The Celery application, configured for at-least-once delivery on Redis.

``celery -A worker.app worker`` works, but ``reseller-webhooks worker`` is the supported entry: it
validates the subscribers file first and starts the embedded scheduler.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from producers.connection import broker_options
from producers.wire import DELIVER_TASK, DISPATCH_TASK, Keys
from worker.redis_transport import transport_for
from worker.settings import WorkerSettings


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    keys = Keys(settings.key_prefix)
    return {
        # Where Redis is (redis://, rediss:// verified, or Sentinel), reconnecting for ever; the
        # visibility timeout: messages whose worker died come back after this long.
        **broker_options(settings),
        "broker_transport": transport_for(settings.redis_url),
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,  # a task killed mid-run is redelivered ...
        "task_reject_on_worker_lost": True,  # ... also when its process is SIGKILLed
        "worker_prefetch_multiplier": 1,  # no hoarding of triggers another thread could run
        "worker_send_task_events": True,  # for Flower
        "task_send_sent_event": True,
        "task_default_queue": keys.queue,
        "task_queues": [
            Queue(name, Exchange(name), routing_key=name) for name in (keys.queue, keys.retry_queue)
        ],
        "task_routes": {DISPATCH_TASK: {"queue": keys.queue}, DELIVER_TASK: {"queue": keys.queue}},
        "worker_pool": "threads",
        "worker_concurrency": settings.concurrency,
        "worker_hijack_root_logger": False,
        "worker_consumer": "worker.consumer:Consumer",
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def make_app(settings: WorkerSettings | None = None) -> Celery:
    settings = settings or WorkerSettings()
    celery = Celery("reseller-webhooks", set_as_current=False)
    celery.conf.update(celery_config(settings))
    celery.conf.webhooks_settings = settings
    return celery


app = make_app()
keys = Keys(app.conf.webhooks_settings.key_prefix)

import worker.tasks  # noqa: E402, F401  (registers the tasks on ``app``)
