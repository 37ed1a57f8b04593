"""A worker's or scheduler's watch over its store (``producers.store_identity``): a Redis that
came back empty, as another store or behind where it was stops the process's work, loudly.

While the reset is not accepted, a worker's tasks do nothing (a dispatch leaves the events
pending, a deliver gives its slot back: the records stay as Redis has them), the scheduler skips
its sweeps, ``webhooks_store_reset`` is 1, and an ERROR line repeats every minute. The first
process to notice records a ``webhooks.store.reset`` operational event in the store, delivered
once the work resumes. ``reseller-webhooks store accept-reset`` resumes every process.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import redis

from reseller_webhooks.producers.store_identity import StoreChange, StoreWatch
from reseller_webhooks.worker.background import BackgroundThread
from reseller_webhooks.worker.operational_events import OperationalEvent
from reseller_webhooks.worker.ops.metrics import STORE_RESET, STORE_SEEN
from reseller_webhooks.worker.records.shapes import iso_ms
from reseller_webhooks.worker.records.store import Store

log = logging.getLogger(__name__)

#: How often the store is checked, and how often a refusal is logged again.
CHECK_INTERVAL_S = 1.0
REPEAT_S = 60.0


class StoreGuard:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.watch = StoreWatch(store.redis, store.keys)
        self._logged_at: float | None = None

    @property
    def refusing(self) -> bool:
        return self.watch.change is not None

    def check(self) -> bool:
        """Look at the store (at most once per interval); True while work must stop."""
        was = self.watch.change
        try:
            change = self.watch.check_every(CHECK_INTERVAL_S)
        except redis.RedisError as exc:  # the work itself meets the outage and says so
            log.debug("store check failed (%s)", type(exc).__name__)
            return was is not None
        STORE_RESET.set(int(change is not None))
        STORE_SEEN.set(self.watch.seen)
        if change is None:
            if was is not None:
                log.warning("store reset accepted: work resumes on store %s", self.watch.known_id)
                self._logged_at = None
            return False
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= REPEAT_S:
            self._logged_at = now
            log.error("STORE RESET: work stopped. %s", change.describe())
        if was is None:
            announce(self.store, change)
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.check()
            stop.wait(CHECK_INTERVAL_S)

    def thread(self) -> BackgroundThread:
        return BackgroundThread("webhooks-store-guard", self.run)


def announce(store: Store, change: StoreChange) -> None:
    """Record ``webhooks.store.reset`` once per stale store id (the first process to notice),
    as a publish records an event."""
    k, r = store.keys, store.redis
    if not r.hsetnx(k.store_identity, f"announced:{change.known_id}", 1):
        return
    seconds, micros = r.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    event_id = f"msg_ops{now_ms}n{r.incr(f'{k.prefix}:ops-seq')}"
    kind = OperationalEvent.STORE_RESET.value
    data = {
        "change": change.kind,
        "previousStoreId": change.known_id,
        "storeId": change.found_id,
        "publishedSeen": change.seen,
        "publishedFound": change.found,
    }
    body = json.dumps({"event": kind, "data": data, "triggeredAt": iso_ms(now_ms)})
    pipe = r.pipeline(transaction=True)
    pipe.hset(
        k.event(event_id),
        mapping={"type": kind, "body": body, "user": "", "published_at": now_ms},
    )
    pipe.expire(k.event(event_id), store.record_retention_s)
    pipe.rpush(k.pending, event_id)
    pipe.hincrby(k.global_tally, "published", 1)
    pipe.execute()
    log.warning("%s recorded (event %s)", kind, event_id)
