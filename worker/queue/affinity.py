"""Keep a worker process on one CPU core of its own.

A worker runs its deliveries on threads, and only one thread at a time runs Python (the GIL). When
the kernel spreads those threads over several cores, every hand-over of the GIL wakes a thread on
another core, and the worker spends as much CPU on hand-overs as on deliveries: on 2 cores, 8
threads delivering to a fast receiver cost about 1.4 ms of CPU per delivery unpinned and 0.9 ms
pinned (docs/benchmarks.md). A pinned worker loses nothing, since it never ran Python on two cores
at once.

Several workers on one machine must not share a core while another sits idle, so each claims its
core in Redis: a lock per (machine, core), held while the worker lives and refreshed in the
background. The machine is named by the kernel's boot id, which containers on one host share.
When every core is claimed the worker stays unpinned and lets the kernel place it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from pathlib import Path

import redis
from redis.exceptions import LockError, LockNotOwnedError

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.wire import Keys

log = logging.getLogger(__name__)

#: A claim lapses this long after its worker stops refreshing it (killed, or cut off from Redis).
CLAIM_TTL_S = 30.0


def machine_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


def allowed_cpus() -> list[int]:
    """The cores this process may run on; none where the OS cannot pin (not Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def pin_process(cpu: int) -> None:
    """Move every thread of this process to ``cpu``; threads started later inherit it."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(tid), {cpu})


def choose(setting: str, cpus: list[int]) -> list[int]:
    """The cores worth trying, in order, for a ``cpu_affinity`` setting (a pure decision).

    ``off`` and a single allowed core mean none; ``auto`` means any allowed core; a number
    (the setting's pattern admits nothing else) means that core, which must be allowed.
    """
    if setting == "off":
        return []
    if setting == "auto":
        return cpus if len(cpus) > 1 else []
    wanted = int(setting)
    if wanted not in cpus:
        raise ConfigError(
            f"WEBHOOKS_CPU_AFFINITY: core {wanted} is not one this process may run on ({cpus})"
        )
    return [wanted]


class CoreClaim:
    """A core claimed in Redis for this worker; :meth:`release` gives it back."""

    def __init__(self, client: redis.Redis, keys: Keys, *, ttl_s: float = CLAIM_TTL_S) -> None:
        self._client = client
        self._keys = keys
        self._machine = machine_id()
        self._ttl_s = ttl_s
        self._lock: redis.lock.Lock | None = None
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self.cpu: int | None = None

    def acquire(self, candidates: list[int]) -> int | None:
        """Claim the first free core of ``candidates``; None when all are taken."""
        for cpu in candidates:
            lock = self._client.lock(
                self._keys.cpu_claim(self._machine, cpu),
                timeout=self._ttl_s,
                blocking=False,
                thread_local=False,
            )
            if lock.acquire():
                self._lock, self.cpu = lock, cpu
                self._refresher = threading.Thread(
                    target=self._refresh, name="core-claim", daemon=True
                )
                self._refresher.start()
                return cpu
        return None

    def _refresh(self) -> None:
        lock, warned = self._lock, False
        while lock is not None and not self._stop.wait(self._ttl_s / 3):
            problem = self._renew(lock)
            if problem and not warned:
                log.warning("core %s %s", self.cpu, problem)
            warned = problem is not None

    def _renew(self, lock: redis.lock.Lock) -> str | None:
        """Keep the claim; say why when it could not be kept (the pin stays either way)."""
        try:
            try:
                lock.reacquire()
            except LockNotOwnedError:  # lost with a Redis restart, or lapsed: claim it again
                if not lock.acquire():
                    return "is now claimed by another worker too"
                log.info("core %s claimed again", self.cpu)
        except redis.RedisError as exc:
            return f"claim not refreshed: {exc}"
        return None

    def release(self) -> None:
        self._stop.set()
        # A refresh under way could otherwise claim the core again after the release below.
        if self._refresher is not None:
            self._refresher.join(timeout=10)
            self._refresher = None
        if self._lock is not None:
            with contextlib.suppress(LockError, redis.RedisError):
                self._lock.release()
            self._lock = None


def pin_worker(client: redis.Redis, keys: Keys, setting: str) -> CoreClaim | None:
    """Apply ``setting`` to this process: pin it to a core it claimed, or leave it as it is.

    A core named in the setting is the operator's choice and is taken without a claim.
    """
    candidates = choose(setting, allowed_cpus())
    if not candidates:
        return None
    if setting != "auto":
        pin_process(candidates[0])
        log.info("pinned to CPU core %d (WEBHOOKS_CPU_AFFINITY)", candidates[0])
        return None
    claim = CoreClaim(client, keys)
    try:
        cpu = claim.acquire(candidates)
    except redis.RedisError as exc:  # the worker itself will wait for Redis; do not die here
        log.warning("could not claim a CPU core (%s): running unpinned", exc)
        return None
    if cpu is None:
        log.info("every core is claimed by another worker: running unpinned")
        return None
    pin_process(cpu)
    log.info("pinned to CPU core %d, claimed in Redis (WEBHOOKS_CPU_AFFINITY=auto)", cpu)
    return claim
