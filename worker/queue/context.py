"""What a Celery app from ``queue.app.make_app`` carries for the worker: its settings, and from
them the process's runtime. Imported by the app, the tasks, the consumer and the lifecycle
alike, so that none of them imports another for it."""

from __future__ import annotations

from celery import Celery

from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.delivery.runtime import Runtime, get_runtime


def settings_of(celery: Celery) -> WorkerSettings:
    """The settings an app from ``make_app`` was built with."""
    settings: WorkerSettings = celery.webhooks_settings
    return settings


def runtime_of(celery: Celery) -> Runtime:
    """The process-wide runtime for that app's settings, built on first use."""
    return get_runtime(settings_of(celery))
