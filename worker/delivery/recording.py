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

#: A result is retried into Redis at least this long, even past its lease: recorded late it is
#: refused as stale, but its attempt still goes into the delivery's attempt log.
STALE_RESULTS_S = 30.0

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
    to send again."""
    return not results or now >= min(claim.expires_at for claim, _ in results)


def stop_recording(results: Sequence[tuple[Claim, Any]], now: float, elapsed_s: float) -> bool:
    """Whether to give up recording ``results`` after ``elapsed_s`` of trying: not while a lease
    holds (recorded in time, the delivery is not sent again), nor in the first
    ``STALE_RESULTS_S`` (recorded late, its attempts are still logged), and always after
    ``RECORDING_LIMIT_S``."""
    if elapsed_s >= RECORDING_LIMIT_S:
        return True
    return leases_over(results, now) and elapsed_s >= STALE_RESULTS_S


def _stop_recording(state: RetryCallState) -> bool:
    """``stop_recording`` of what the call records (its last positional argument)."""
    results = state.args[-1] if state.args else ()
    return stop_recording(results, time.monotonic(), state.seconds_since_start or 0.0)


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
