"""What runs beside the tasks in a worker process, started and stopped with it: one bootstep.

:class:`Lifecycle` is a step of Celery's worker blueprint. It starts after the pool and before
the consumer takes its first message, in this order (:func:`components`):

1. the CPU pin (``queue.affinity``; nothing unless ``WEBHOOKS_CPU_AFFINITY`` asks for it),
2. the /metrics endpoint (``ops.metrics``),
3. the slot heartbeat (``delivery.heartbeat``),
4. the wake-up listener (``delivery.wake``),
5. the subscribers-file watcher (``config.reload``),
6. the embedded scheduler (``queue.scheduler``),

having first pointed the screening transport's stray entries at ``dlq messages``
(``queue.kombu_overrides.on_stray_message``). On a warm shutdown, once the pool has finished the
tasks in flight (which still need the heartbeat for their slots), it stops and joins them in
reverse order, each within :data:`STOP_TIMEOUT_S` (a part that does not stop is logged by name),
then closes the runtime's connections. As the process exits it logs what it still holds
(``queue.leftovers``): ``worker stopped; left behind: no thread, no socket`` when all went well.
"""

from __future__ import annotations

import atexit
import functools
import gc
import logging
from typing import Any

from celery import Celery, bootsteps

from reseller_webhooks.worker.background import Component
from reseller_webhooks.worker.config.reload import watch
from reseller_webhooks.worker.delivery.heartbeat import heartbeat
from reseller_webhooks.worker.delivery.runtime import Runtime
from reseller_webhooks.worker.delivery.wake import seats
from reseller_webhooks.worker.ops.metrics import metrics_server
from reseller_webhooks.worker.queue import leftovers
from reseller_webhooks.worker.queue.affinity import CorePin
from reseller_webhooks.worker.queue.consumer import record_bad_message
from reseller_webhooks.worker.queue.context import runtime_of
from reseller_webhooks.worker.queue.kombu_overrides import on_stray_message
from reseller_webhooks.worker.queue.scheduler import Scheduler

log = logging.getLogger(__name__)

#: How long each part may take to stop before the worker moves on without it.
STOP_TIMEOUT_S = 10.0


def components(rt: Runtime, celery: Celery) -> list[Component]:
    """The parts, in start order; one line each, so a part is dropped by deleting its line."""
    settings = rt.settings
    parts: list[Component | None] = [
        CorePin(settings.cpu_affinity),
        metrics_server(
            settings,
            rt.store,
            lambda: [s.id for s in rt.config.subscribers],
            lambda: {s.id: s.rate_limit_per_s for s in rt.config.subscribers},
        ),
        heartbeat(rt.deliverer),
        rt.deliverer.wakeups,
        watch(rt),
        rt.guard.thread(),
        Scheduler(store=rt.store, celery=celery, settings=settings, guard=rt.guard).thread()
        if settings.embedded_scheduler
        else None,
    ]
    return [part for part in parts if part is not None]


def stop_all(running: list[Component], timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop and join ``running`` from the last started to the first; the names of those that
    did not stop in time (each is logged)."""
    stuck = []
    while running:
        part = running.pop()
        try:
            stopped = part.stop(timeout_s)
        except Exception:
            log.exception("could not stop %s", part.name)
            stopped = False
        if not stopped:
            log.error("%s did not stop within %g s", part.name, timeout_s)
            stuck.append(part.name)
    return stuck


def report_leftovers() -> None:
    threads, sockets = leftovers.other_threads(), leftovers.open_sockets()
    log.info("worker stopped; left behind: %s", leftovers.describe(threads, sockets))


class Lifecycle(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts :func:`components` with the worker and stops them with it (see module doc)."""

    label = "webhooks"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.running: list[Component] = []
        self.rt: Runtime | None = None

    def start(self, parent: Any) -> None:
        app: Celery = parent.app
        rt = self.rt = runtime_of(app)
        threads = parent.concurrency  # --concurrency may override the setting
        if isinstance(threads, int) and threads > 0:
            rt.deliverer.threads_per_subscriber = max(1, threads // 2)
            rt.deliverer.wakeups.seats = seats(threads)
        on_stray_message(functools.partial(record_bad_message, app))
        atexit.register(report_leftovers)
        try:
            for part in components(rt, app):
                part.start()
                self.running.append(part)
        except BaseException:
            stop_all(self.running)
            raise
        log.info(
            "delivery health: the console (reseller-webhooks console), dlq list and /metrics;"
            " Flower lists Celery tasks, each serving a chunk of deliveries, which succeed even"
            " when every delivery in them failed"
        )
        # Everything built so far lives as long as the process: keep it out of the collector's
        # full passes, which otherwise stall deliveries for tens of milliseconds.
        gc.freeze()

    def stop(self, parent: Any) -> None:
        """Warm shutdown: the tasks in flight end first (the pool's stop waits for them and
        Celery's own call to it afterwards finds nothing left), then the parts stop."""
        pool = getattr(parent, "pool", None)
        if pool is not None:
            pool.stop()
        self._stop(parent)

    def terminate(self, parent: Any) -> None:
        """Cold shutdown: the parts stop now, tasks in flight or not."""
        self._stop(parent)

    def _stop(self, parent: Any) -> None:
        stop_all(self.running)
        if self.rt is not None:
            self.rt.deliverer.sender.close()
            self.rt.store.redis.close()
        parent.app.pool.force_close_all()  # the connections send_task used
