"""Who may take one of a worker's threads: the pure decisions behind ``Deliverer._take_seat``.

A deliver task holds a thread for as long as its subscriber's attempts take. A healthy endpoint
answers in milliseconds; a slow one (2 s, or a timeout) holds a thread for seconds per attempt,
so a few slow subscribers with a backlog would hold every thread while the others' triggers
wait in the queue. Four rules keep threads for the others:

- one subscriber holds at most half the worker's threads (:func:`share`);
- a subscriber already served in the worker does not take its last free thread unless it is
  known to be fast: that one is kept for a subscriber not served at all (which may be the one
  starved); this holds before anything is known of an endpoint's speed (one that hangs);
- slow subscribers (recent attempt time at least :data:`SLOW_ATTEMPT_S`) together hold at most
  half of them (:func:`slow_seats`) while a subscriber that is not slow has wanted a thread
  recently (:data:`WANTED_WITHIN_S`); with nothing else to do, they may use them all;
- a slow subscriber claims only what it can attempt within a time slice (:func:`chunk_size`), so
  its thread comes back to the queue, and these rules apply again, every slice.

A task refused a seat releases its slot; the scheduler arms the subscriber a new one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

#: A subscriber whose recent attempts take this long (or longer) is slow, s.
SLOW_ATTEMPT_S = 1.0

#: Weight of an attempt's time in its subscriber's recent attempt time (the rest: the past).
RECENT_WEIGHT = 0.5

#: Slow subscribers are held to their seats while a subscriber that is not slow asked for a
#: thread this recently, s.
WANTED_WITHIN_S = 10.0


def recent_attempt_s(previous_s: float | None, attempt_s: float) -> float:
    """A subscriber's recent attempt time, after one more attempt (a moving average)."""
    if previous_s is None:
        return attempt_s
    return RECENT_WEIGHT * attempt_s + (1 - RECENT_WEIGHT) * previous_s


def is_slow(recent_s: float | None) -> bool:
    """Whether attempts to a subscriber hold a thread long (unknown: not slow)."""
    return recent_s is not None and recent_s >= SLOW_ATTEMPT_S


def share(threads: int) -> int:
    """The threads one subscriber may hold in a worker."""
    return max(1, threads // 2)


def slow_seats(threads: int) -> int:
    """The threads slow subscribers may hold together while others want threads."""
    return max(1, threads // 2)


def may_sit(
    threads: int,
    *,
    held: int,
    mine: int,
    recent_s: float | None,
    slow_held: int,
    others_want: bool,
) -> bool:
    """Whether a task of a subscriber holding ``mine`` of the ``held`` threads may take one more.

    ``recent_s``: the subscriber's recent attempt time (``None``: none made yet);
    ``slow_held``: threads held by slow subscribers now; ``others_want``: a subscriber that is
    not slow asked for a thread recently.
    """
    if mine >= share(threads):
        return False
    fast = recent_s is not None and not is_slow(recent_s)
    if mine and not fast and threads - held <= 1:
        return False
    return not (is_slow(recent_s) and others_want and slow_held >= slow_seats(threads))


def chunk_size(most: int, recent_s: float | None, time_slice_s: float) -> int:
    """Deliveries to claim at once: ``most``, or for a slow subscriber what its attempts can
    finish within ``time_slice_s`` (at least one)."""
    if recent_s is None or not is_slow(recent_s):
        return most
    return max(1, min(most, math.floor(time_slice_s / recent_s)))


class Pace:
    """What one worker process knows of its subscribers' speed: each one's recent attempt time,
    and when a subscriber that is not slow last asked for a thread. The caller serialises
    :meth:`may_sit` (it holds its seats' lock); :meth:`attempted` may race (a lost sample)."""

    def __init__(self) -> None:
        self.attempt_s: dict[str, float] = {}
        self._others_asked_at = -math.inf

    def attempted(self, subscriber_id: str, seconds: float) -> None:
        self.attempt_s[subscriber_id] = recent_attempt_s(self.attempt_s.get(subscriber_id), seconds)

    def chunk(self, subscriber_id: str, most: int, time_slice_s: float) -> int:
        return chunk_size(most, self.attempt_s.get(subscriber_id), time_slice_s)

    def may_sit(self, subscriber_id: str, threads: int, held: Iterable[str], now: float) -> bool:
        """Whether ``subscriber_id`` may take one more thread, ``held`` naming the subscriber
        of every thread held (``now``: ``time.monotonic()``)."""
        recent_s = self.attempt_s.get(subscriber_id)
        if not is_slow(recent_s):
            self._others_asked_at = now
        count = mine = slow_held = 0
        for sub in held:
            count += 1
            mine += sub == subscriber_id
            slow_held += is_slow(self.attempt_s.get(sub))
        return may_sit(
            threads,
            held=count,
            mine=mine,
            recent_s=recent_s,
            slow_held=slow_held,
            others_want=now - self._others_asked_at < WANTED_WITHIN_S,
        )
