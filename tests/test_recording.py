"""Recording attempt results rides out a Redis outage while the results' leases last
(worker/delivery/recording.py): table tests of the decision, and the policy on a callable that
fails the way an unreachable Redis does."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from reseller_webhooks.worker.delivery.recording import RECORDING, leases_over
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


def test_a_recording_stops_once_its_lease_has_ended() -> None:
    """Past the lease the finish script would refuse the result as stale: the error is raised
    then (the delivery goes to its new owner), not after a fixed delay."""
    flaky = Flaky(failures=10**6)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        flaky.record([(claim(started + 0.5), None)])
    assert flaky.calls > 1
    assert time.monotonic() - started < 10  # bounded by the lease, far from the 300 s cap
