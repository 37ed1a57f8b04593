"""The thread-sharing decisions (``delivery.seats``), as tables."""

from __future__ import annotations

import pytest

from reseller_webhooks.worker.delivery.seats import (
    Pace,
    chunk_size,
    is_slow,
    may_sit,
    recent_attempt_s,
    share,
    slow_seats,
)


@pytest.mark.parametrize(
    ("previous_s", "attempt_s", "expected_s"),
    [
        (None, 0.004, 0.004),  # the first attempt is the recent time
        (0.004, 2.0, 1.002),  # half the newest, half the past
        (2.0, 2.0, 2.0),
        (2.0, 0.002, 1.001),  # a slow endpoint that recovered: fast again after two attempts
        (1.001, 0.002, 0.5015),
    ],
)
def test_recent_attempt_time(previous_s: float | None, attempt_s: float, expected_s: float) -> None:
    assert recent_attempt_s(previous_s, attempt_s) == pytest.approx(expected_s)


@pytest.mark.parametrize(
    ("recent_s", "slow"),
    [(None, False), (0.0, False), (0.999, False), (1.0, True), (30.0, True)],
)
def test_slow_is_a_recent_attempt_time_of_a_second_or_more(
    recent_s: float | None, slow: bool
) -> None:
    assert is_slow(recent_s) is slow


@pytest.mark.parametrize(
    ("threads", "one", "slow_together"),
    [(1, 1, 1), (2, 1, 1), (3, 1, 1), (4, 2, 2), (8, 4, 4), (9, 4, 4), (32, 16, 16)],
)
def test_shares_of_a_worker(threads: int, one: int, slow_together: int) -> None:
    assert share(threads) == one
    assert slow_seats(threads) == slow_together


FAST, SLOW, UNKNOWN = 0.004, 2.0, None


@pytest.mark.parametrize(
    ("threads", "held", "mine", "recent_s", "slow_held", "others_want", "sits"),
    [
        # one subscriber: half the threads at most
        (8, 0, 0, FAST, 0, True, True),
        (8, 3, 3, FAST, 0, True, True),
        (8, 4, 4, FAST, 0, True, False),
        (8, 4, 4, UNKNOWN, 0, True, False),
        (1, 0, 0, FAST, 0, True, True),  # a worker of one thread serves anyone
        (1, 0, 0, SLOW, 0, True, True),
        # the last free thread: for a subscriber this worker does not serve yet, unless fast
        (4, 3, 1, UNKNOWN, 0, True, False),
        (4, 3, 1, SLOW, 0, False, False),
        (4, 3, 1, FAST, 0, True, True),
        (4, 3, 0, UNKNOWN, 0, True, True),
        (4, 2, 1, UNKNOWN, 0, True, True),
        (8, 7, 3, UNKNOWN, 0, True, False),
        # slow subscribers together: half the threads while others want some
        (8, 4, 0, SLOW, 4, True, False),
        (8, 3, 0, SLOW, 3, True, True),
        (8, 4, 0, SLOW, 4, False, True),  # nobody else asked lately: they may use more
        (8, 6, 1, SLOW, 6, False, True),
        (8, 4, 0, FAST, 4, True, True),  # a fast one is not held by the slow ones' seats
        (8, 4, 0, UNKNOWN, 4, True, True),
        (2, 1, 0, SLOW, 1, True, False),
        (2, 1, 0, FAST, 1, True, True),
    ],
)
def test_may_sit(
    threads: int,
    held: int,
    mine: int,
    recent_s: float | None,
    slow_held: int,
    others_want: bool,
    sits: bool,
) -> None:
    decided = may_sit(
        threads,
        held=held,
        mine=mine,
        recent_s=recent_s,
        slow_held=slow_held,
        others_want=others_want,
    )
    assert decided is sits


def test_pace_holds_slow_subscribers_to_half_while_a_fast_one_asked_lately() -> None:
    pace = Pace()
    for sub in ("a", "b", "c", "d", "e"):
        pace.attempted(sub, 2.0)
    pace.attempted("fast", 0.004)
    assert pace.may_sit("e", 8, ["a", "b", "c", "d"], now=100.0)  # nobody else asked yet
    assert pace.may_sit("fast", 8, ["a", "b", "c", "d"], now=100.0)
    assert not pace.may_sit("e", 8, ["a", "b", "c", "d"], now=105.0)
    assert pace.may_sit("e", 8, ["a", "b", "c", "d"], now=110.0)  # 10 s later: no one else
    assert pace.chunk("e", 50, time_slice_s=2.0) == 1
    assert pace.chunk("fast", 50, time_slice_s=2.0) == 50
    assert pace.chunk("unknown", 50, time_slice_s=2.0) == 50


@pytest.mark.parametrize(
    ("most", "recent_s", "expected"),
    [
        (50, None, 50),  # unknown: a whole chunk
        (50, 0.002, 50),
        (50, 0.999, 50),  # not slow
        (50, 1.0, 2),  # what fits in a 2 s slice
        (50, 2.0, 1),
        (50, 30.0, 1),  # at least one
        (1, 1.0, 1),
    ],
)
def test_chunk_size(most: int, recent_s: float | None, expected: int) -> None:
    assert chunk_size(most, recent_s, time_slice_s=2.0) == expected
