"""Redis refusing commands (full, read-only, unable to persist, busy) as an outage of this process.

Whatever meets a refusal (a task, the scheduler, the queue consumer, the console) reports it
here and waits; a write that goes through ends the outage: recorded deliveries, or the probe
the scheduler makes while the outage lasts (a script that had nothing to write says nothing:
Redis refuses a script only at its first write). The first refusal of an
outage is logged at ERROR and the end at WARNING with its length, once each, however many
attempts fail in between; the metrics count every refusal by kind and say whether this process
is in an outage. Nothing is recorded by a refused command (``producers.refusals``), so resuming
is only doing the same again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from prometheus_client import Counter, Gauge

from reseller_webhooks.producers.refusals import refusal
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.ops.metrics import REGISTRY

log = logging.getLogger(__name__)

REFUSALS = Counter(
    "webhooks_redis_refusals",
    "Commands Redis refused in this process (full, read-only, unable to persist, busy), by kind.",
    ["kind"],
    registry=REGISTRY,
)
REFUSING = Gauge(
    "webhooks_redis_refusing",
    "1 while Redis refuses this process's writes (since the first refusal, until one goes"
    " through again).",
    registry=REGISTRY,
)


def backoff_s(failures: int, *, first_s: float, most_s: float) -> float:
    """How long to wait after ``failures`` refusals in a row: doubling from ``first_s``, at most
    ``most_s`` (so a freed Redis is used again within ``most_s``)."""
    if failures <= 0:
        return 0.0
    return min(most_s, first_s * 2.0 ** min(failures - 1, 32))


class Outage:
    """This process's view of whether Redis refuses commands. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self._kind = ""
        self._clock = clock

    @property
    def refusing(self) -> str | None:
        """The kind of the refusal that began the current outage, or None."""
        with self._lock:
            return self._kind if self._since is not None else None

    def refused(self, exc: BaseException, doing: str) -> bool:
        """Report ``exc`` met while ``doing``; True when it is a refusal (the caller waits and
        tries again), False when it is not one (the caller handles it as before)."""
        kind = refusal(exc)
        if kind is None:
            return False
        REFUSALS.labels(kind).inc()
        with self._lock:
            first = self._since is None
            if first:
                self._since, self._kind = self._clock(), kind
        if first:
            REFUSING.set(1)
            log.error(
                "Redis refuses writes (%s) while %s: an outage; everything waits and tries again"
                " until it accepts them (free memory or raise maxmemory)",
                kind,
                doing,
            )
        return True

    def probe(self, client: redis.Redis, keys: Keys) -> None:
        """Ask Redis whether it accepts writes again, writing nothing (``SET`` of a key that is
        never there, only if it is there); raises the refusal while it lasts."""
        client.set(keys.write_probe, b"", xx=True)
        self.accepted()

    def accepted(self) -> None:
        """A write went through: the outage, if there was one, is over."""
        if self._since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            REFUSING.set(0)
            log.warning("Redis accepts writes again after %.1f s", self._clock() - since)


#: The outage of this process (one Redis deployment per process).
REDIS = Outage()
