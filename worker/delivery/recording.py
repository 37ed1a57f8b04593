"""How the deliverer's writes to Redis ride out an outage: recorded results wait while their
leases last, a refused fan-out is tried again while the outage lasts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis
from tenacity import RetryCallState, retry, retry_if_exception, stop_after_delay, wait_exponential

from reseller_webhooks.worker.ops import outage
from reseller_webhooks.worker.records.shapes import Claim

#: The longest a recording is retried whatever its leases (a lease is at most ~4 min).
RECORDING_LIMIT_S = 300.0


def _waited_out(exc: BaseException) -> bool:
    """A Redis out of reach for a moment, or one refusing writes (an outage, reported)."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return True
    return outage.REDIS.refused(exc, "recording deliveries")


def leases_over(results: Sequence[tuple[Claim, Any]], now: float) -> bool:
    """Whether the earliest lease among ``results`` has ended by ``now`` (local monotonic): from
    then on the finish script refuses that result as stale and the delivery is its new owner's
    to send again, so waiting longer to record it buys nothing."""
    return not results or now >= min(claim.expires_at for claim, _ in results)


def _stop_recording(state: RetryCallState) -> bool:
    """Retry a recording while the leases of what it records last (its last positional
    argument), within ``RECORDING_LIMIT_S``."""
    results = state.args[-1] if state.args else ()
    return leases_over(results, time.monotonic()) or stop_after_delay(RECORDING_LIMIT_S)(state)


# Attempts that happened: recording them must survive a Redis hiccup, and a Redis that refuses
# writes for a while (full): the results wait here, while their leases last, rather than be
# attempted again. A retry after a lost reply may log an attempt twice, but the state moves once
# (the lease check in the script).
RECORDING = retry(
    retry=retry_if_exception(_waited_out),
    wait=wait_exponential(multiplier=0.05, max=2),
    stop=_stop_recording,
    reraise=True,
)

#: A drain refused (nothing done) is tried again the same way, while the outage lasts.
REFUSED = retry(
    retry=retry_if_exception(lambda exc: outage.REDIS.refused(exc, "fanning out events")),
    wait=wait_exponential(multiplier=0.05, max=2),
    stop=stop_after_delay(30),
    reraise=True,
)
