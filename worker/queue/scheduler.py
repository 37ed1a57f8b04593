"""Makes due retries ready, takes back expired leases and re-sends lapsed triggers.

Runs as a thread inside every worker (default) or as its own process (``reseller-webhooks
scheduler``). Any number may run at once: each tick is one atomic Lua sweep, so a delivery is
handed out once per tick, by one scheduler.
"""

from __future__ import annotations

import logging
import threading

import redis
from celery import Celery
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from reseller_webhooks.worker.background import BackgroundThread
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.ops import metrics, outage
from reseller_webhooks.worker.ops.store_guard import StoreGuard
from reseller_webhooks.worker.queue.triggers import send_deliver, send_dispatch
from reseller_webhooks.worker.records.store import Store

log = logging.getLogger(__name__)

#: While Redis refuses writes, ticks back off up to this long: the most a freed Redis waits.
REFUSED_WAIT_S = 2.0


class Scheduler:
    def __init__(
        self,
        *,
        store: Store,
        celery: Celery,
        settings: WorkerSettings,
        guard: StoreGuard | None = None,
    ) -> None:
        self.store = store
        self.guard = guard or StoreGuard(store)
        self.celery = celery
        self.settings = settings

    # A Redis hiccup should not end the loop; a long outage is logged once per tick.
    @retry(
        retry=retry_if_exception_type(redis.ConnectionError),
        wait=wait_exponential(multiplier=0.05, max=1),
        stop=stop_after_delay(5),
        reraise=True,
    )
    def tick(self) -> tuple[int, int]:
        """One sweep; returns (deliveries made ready again, triggers sent)."""
        keys = self.store.keys
        if self.guard.check():
            return 0, 0  # Redis came back empty or behind: no sweep until it is accepted
        swept = self.store.sweep(
            batch=self.settings.scheduler_batch,
            dispatch_lost_after_s=self.settings.visibility_timeout_s,
        )
        metrics.record_sweep(swept.late_ms)
        send_deliver(self.celery, keys, swept.triggers)
        if swept.dispatch:
            send_dispatch(self.celery, keys)
        sent = len(swept.triggers) + int(swept.dispatch)
        if swept.moved or sent:
            log.info(
                "scheduler: %d delivery(ies) due or taken back, %d trigger(s) sent",
                swept.moved,
                sent,
            )
        return swept.moved, sent

    def run(self, stop: threading.Event) -> None:
        interval = self.settings.scheduler_interval_s
        log.info("scheduler running every %.2f s", interval)
        refused = 0  # ticks refused in a row: Redis full, read-only, ...
        while not stop.is_set():
            try:
                if outage.REDIS.refusing:
                    outage.REDIS.probe(self.store.redis, self.store.keys)
                moved = self.tick()
            except Exception as exc:
                if outage.REDIS.refused(exc, "sweeping due retries"):
                    refused += 1
                    stop.wait(outage.backoff_s(refused, first_s=interval, most_s=REFUSED_WAIT_S))
                    continue
                log.exception("scheduler tick failed; trying again")
                moved = (0, 0)
            else:
                refused = 0
            # Keep draining without a pause while a tick was full.
            if moved[0] < self.settings.scheduler_batch:
                stop.wait(interval)

    def thread(self) -> BackgroundThread:
        """This scheduler on a thread of its own (the embedded scheduler of a worker)."""
        return BackgroundThread("webhooks-scheduler", self.run)
