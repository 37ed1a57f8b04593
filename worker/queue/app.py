"""The Celery application, configured for at-least-once delivery on Redis.

``celery -A reseller_webhooks.worker.queue.app worker`` works, but ``reseller-webhooks worker`` is
the supported entry: it validates the subscribers file and the settings first. The tasks
(``queue.tasks``) are imported by the worker as it starts (``include``), not by this module, and
what runs beside them (heartbeat, scheduler, ...) is started and stopped by the bootstep of
``queue.lifecycle``. Processes that only send a task by name use a light app built from the
settings instead (``producers.publisher.celery_client``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from reseller_webhooks.producers.connection import broker_options
from reseller_webhooks.producers.wire import DELIVER_TASK, DISPATCH_TASK, Keys
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.queue import kombu_overrides

#: Imported by a worker as it starts, not by this module (Flower and ``celery inspect`` import it
#: too, and need neither the tasks nor what runs beside them).
TASK_MODULES = [
    "reseller_webhooks.worker.queue.tasks",
    "reseller_webhooks.worker.queue.publishing",
]
LIFECYCLE_STEP = "reseller_webhooks.worker.queue.lifecycle:Lifecycle"


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """Celery's settings for the worker: plain data only (``celery inspect`` serialises them)."""
    keys = Keys(settings.key_prefix)
    # Where Redis is (redis://, rediss:// verified, or Sentinel), reconnecting for ever; the
    # visibility timeout: messages whose worker died come back after this long.
    broker = broker_options(settings)
    return {
        **broker,
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
        "worker_consumer": "reseller_webhooks.worker.queue.consumer:Consumer",
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def make_app(settings: WorkerSettings | None = None) -> Celery:
    settings = settings or WorkerSettings()
    # redis://, rediss:// and sentinel:// screen what they pop (queue.kombu_overrides)
    kombu_overrides.install()
    celery = Celery("reseller-webhooks", include=TASK_MODULES, set_as_current=False)
    celery.conf.update(celery_config(settings))
    celery.steps["worker"].add(LIFECYCLE_STEP)
    # On the app object, not in ``celery.conf``: `celery inspect conf` and Flower's Config tab
    # show the conf, and Celery masks only its own settings (broker_url), not ours.
    celery.webhooks_settings = settings
    return celery


app = make_app()
keys = Keys(app.webhooks_settings.key_prefix)
