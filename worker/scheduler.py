"""Moves due retries, expired leases and lost triggers back onto the queue.

Runs as a thread inside every worker (default) or as its own process (``reseller-webhooks
scheduler``). Any number may run at once: each tick is one atomic Lua sweep, so a delivery is
handed out once per tick, by one scheduler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from celery import Celery
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from producers.wire import DELIVER_TASK, DISPATCH_TASK
from worker.delivery import chunks_by_subscriber
from worker.settings import WorkerSettings
from worker.store import Store

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        *,
        store: Store,
        celery: Celery,
        settings: WorkerSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.celery = celery
        self.settings = settings
        self.clock = clock

    # A Redis hiccup should not end the loop; a long outage is logged once per tick.
    @retry(
        retry=retry_if_exception_type(redis.ConnectionError),
        wait=wait_exponential(multiplier=0.05, max=1),
        stop=stop_after_delay(5),
        reraise=True,
    )
    def tick(self) -> tuple[int, int]:
        """One sweep; returns (deliveries triggered, events re-dispatched)."""
        keys = self.store.keys
        now = int(self.clock() * 1000)
        # A queued delivery whose trigger is overdue was lost only if the queues have drained
        # past it; while they are long, its trigger is most likely still waiting in line.
        requeue = self.store.queue_depth() < self.settings.scheduler_batch
        deliveries, events = self.store.sweep(
            now_ms=now,
            lost_after_ms=now + int(self.settings.visibility_timeout_s * 1000),
            batch=self.settings.scheduler_batch,
            requeue_queued=requeue,
        )
        for chunk in chunks_by_subscriber(deliveries, self.settings.deliver_chunk):
            self.celery.send_task(DELIVER_TASK, args=[chunk], queue=keys.retry_queue)
        for start in range(0, len(events), self.settings.deliver_chunk):
            chunk = events[start : start + self.settings.deliver_chunk]
            self.celery.send_task(DISPATCH_TASK, args=[chunk], queue=keys.queue)
        if deliveries or events:
            log.info(
                "scheduler: triggered %d delivery(ies), %d event(s)", len(deliveries), len(events)
            )
        return len(deliveries), len(events)

    def run(self, stop: threading.Event) -> None:
        log.info("scheduler running every %.2f s", self.settings.scheduler_interval_s)
        while not stop.is_set():
            try:
                moved = self.tick()
            except Exception:
                log.exception("scheduler tick failed; trying again")
                moved = (0, 0)
            # Keep draining without a pause while a tick was full.
            if sum(moved) < self.settings.scheduler_batch:
                stop.wait(self.settings.scheduler_interval_s)

    def start_thread(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(stop,), name="webhooks-scheduler", daemon=True
        )
        thread.start()
        return thread, stop
