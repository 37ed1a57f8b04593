"""Recording attempt results rides out a Redis outage while the results' leases last, and at
least 30 s (recorded late, an attempt is still logged) (worker/delivery/recording.py): table tests
of the decision, and the policy on a callable that fails the way an unreachable Redis does."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from reseller_webhooks.worker.delivery.recording import (
    RECORDING,
    RECORDING_LIMIT_S,
    STALE_RESULTS_S,
    leases_over,
    stop_recording,
)
from reseller_webhooks.worker.records.shapes import Claim


def claim(expires_at: float) -> Claim:
    return Claim("msg_1:s", "msg_1", "s", 1, "scheduled", b"{}", 1, expires_at)


@pytest.mark.parametrize(
    ("expiries", "now", "over"),
    [
        ((), 0.0, True),  # nothing to record
        ((10.0,), 9.9, False),
        ((10.0,), 10.0, True),
        ((10.0, 20.0), 15.0, True),  # the earliest lease decides: that result is stale
        ((20.0, 10.0), 9.0, False),
    ],
)
def test_leases_over(expiries: tuple[float, ...], now: float, *, over: bool) -> None:
    assert leases_over([(claim(e), None) for e in expiries], now) is over


@pytest.mark.parametrize(
    ("expires_at", "now", "elapsed_s", "stop"),
    [
        (100.0, 50.0, 40.0, False),  # the lease holds: recorded in time, not sent again
        (100.0, 99.0, RECORDING_LIMIT_S - 1, False),
        (100.0, 99.0, RECORDING_LIMIT_S, True),  # the cap, whatever the lease
        (100.0, 101.0, STALE_RESULTS_S - 1, False),  # stale, but its attempt is still logged
        (100.0, 101.0, STALE_RESULTS_S, True),
    ],
)
def test_stop_recording(expires_at: float, now: float, elapsed_s: float, *, stop: bool) -> None:
    assert stop_recording([(claim(expires_at), None)], now, elapsed_s) is stop


class Flaky:
    """Fails ``failures`` times as a Redis out of reach does, then records."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    @RECORDING
    def record(self, done: list[tuple[Claim, Any]]) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise redis.ConnectionError("Connection refused")
        return "recorded"


def test_a_recording_is_retried_while_its_lease_lasts() -> None:
    flaky = Flaky(failures=3)
    assert flaky.record([(claim(time.monotonic() + 60), None)]) == "recorded"
    assert flaky.calls == 4
