"""Failed console logins and tokens slow the next try down, per client address and per user.

A few failures are free; then each one locks the address (or the user name) for twice as long
as the one before, up to ``MAX_LOCK_S``; failures are forgotten ``WINDOW_S`` after the last
one. While locked, a try is refused (429) without looking at the password, so a guess made
then tells nothing and does not count. The record is in Redis (with a TTL), so several console
processes behind one address share it.

Locking the user name would let anyone keep the operator out by guessing on their name: a
browser that has logged in as that user before carries a signed cookie that says so, and the
user's lock does not apply to it (its address's own lock still does).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import cast

import redis

from reseller_webhooks.producers.wire import Keys

#: Failures within the window that lock nothing.
FREE_FAILURES = 4
#: Longest lock, s.
MAX_LOCK_S = 300.0
#: Failures are forgotten this long after the last, s.
WINDOW_S = 900

#: Who a lock is about: ("addr", "192.0.2.1") or ("user", "ops").
Subject = tuple[str, str]


def lock_seconds(failures: int, base_s: float) -> float:
    """How long the ``failures``-th failure in a row locks: nothing for the first
    ``FREE_FAILURES``, then ``base_s``, doubling, at most ``MAX_LOCK_S``."""
    if failures <= FREE_FAILURES:
        return 0.0
    doublings = min(failures - FREE_FAILURES - 1, 32)
    return min(base_s * float(2**doublings), MAX_LOCK_S)


class Throttle:
    def __init__(self, client: redis.Redis, keys: Keys, *, base_s: float) -> None:
        self.redis = client
        self.keys = keys
        self.base_s = base_s

    def _key(self, subject: Subject) -> str:
        kind, who = subject
        return self.keys.console_throttle(kind, hashlib.sha256(who.encode()).hexdigest()[:32])

    def wait_s(self, subjects: Sequence[Subject]) -> float:
        """Seconds until none of ``subjects`` is locked (0: try now)."""
        pipe = self.redis.pipeline(transaction=False)
        for subject in subjects:
            pipe.hget(self._key(subject), "until")
        now = time.time()
        ends = [float(cast(bytes, raw)) for raw in pipe.execute() if raw]
        return float(max([end - now for end in ends] + [0.0]))

    def failed(self, subjects: Sequence[Subject]) -> None:
        """Count a failure against each subject (and lock it, past the free ones)."""
        pipe = self.redis.pipeline(transaction=True)
        for subject in subjects:
            pipe.hincrby(self._key(subject), "failures", 1)
            pipe.expire(self._key(subject), WINDOW_S)
        counts = pipe.execute()[0::2]
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        for subject, count in zip(subjects, counts, strict=True):
            lock = lock_seconds(int(count), self.base_s)
            if lock:
                pipe.hset(self._key(subject), "until", repr(now + lock))
        pipe.execute()

    def forget(self, subject: Subject) -> None:
        """A success from this subject: its failures are forgotten."""
        self.redis.delete(self._key(subject))
