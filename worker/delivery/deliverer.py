"""Fan-out and delivery: applies the pure decisions to the durable records."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from reseller_webhooks.producers.user import format_timestamp
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.config.subscribers import Subscriber, SubscribersConfig
from reseller_webhooks.worker.config.urls import redact_url
from reseller_webhooks.worker.delivery.outcome import Decision, Outcome, decide
from reseller_webhooks.worker.delivery.wake import Wakeups, seats, slot_name
from reseller_webhooks.worker.errors import PermanentDeliveryError
from reseller_webhooks.worker.http.sender import AttemptResult, Sender, attempt_bound_s
from reseller_webhooks.worker.operational_events import WORKER_EVENT_TYPES
from reseller_webhooks.worker.ops import metrics
from reseller_webhooks.worker.records.store import (
    Claim,
    ClaimBatch,
    Drained,
    Finish,
    Route,
    Store,
    Trigger,
)

log = logging.getLogger(__name__)

#: Grace beyond an attempt's own bound before its lease may be taken over.
LEASE_MARGIN_S = 5.0

#: Results are written to Redis at least this often while a chunk is being delivered.
FLUSH_INTERVAL_S = 0.1

#: Most events one drain script call fans out.
DRAIN_BATCH = 500

#: A task that has worked this long hands its trigger back to the queue, behind the others.
TIME_SLICE_S = 2.0

SendTriggers = Callable[[Sequence[Trigger]], None]

# Attempts that happened: recording them must survive a Redis hiccup. A retry after a lost
# reply may log an attempt twice, but the state moves once (the lease check in the script).
_RECORDING = retry(
    retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
    wait=wait_exponential(multiplier=0.05, max=2),
    stop=stop_after_delay(30),
    reraise=True,
)


def _event_type(body: bytes) -> str:
    try:
        return str(json.loads(body)["event"])
    except (ValueError, KeyError, TypeError):
        return ""


def _iso(ms: float) -> str:
    return format_timestamp(datetime.fromtimestamp(ms / 1000, UTC))


#: Why a delivery to a subscriber no longer in the file dies without an attempt.
REMOVED_REASON = "subscriber removed from the subscribers file"


@dataclass(frozen=True, eq=False)
class Setup:
    """The subscribers a task works with, swapped whole on a reload: a task takes the current
    one when it starts and keeps it to its end, so a reload applies between deliveries. A
    replaced setup's connections close when the last task using it ends."""

    config: SubscribersConfig
    sender: Sender
    routes: dict[str, list[Route]]

    @classmethod
    def of(cls, config: SubscribersConfig, sender: Sender) -> Setup:
        routes = {
            t: [
                Route(s.id, ordered=s.ordering == "per_user", coalesce=s.coalesce)
                for s in config.matching(t)
            ]
            for t in WORKER_EVENT_TYPES
        }
        return cls(config, sender, routes)


@dataclass
class Served:
    """What one deliver task did for one subscriber."""

    counts: Counter[str] = field(default_factory=Counter)
    #: The time slice ran out with work left: the caller sends the trigger again.
    resend: bool = False


class Deliverer:
    def __init__(
        self,
        *,
        config: SubscribersConfig,
        store: Store,
        sender: Sender,
        settings: WorkerSettings,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.setup = Setup.of(config, sender)
        self.store = store
        # Not started here: until the worker starts the listener, lingering tasks poll.
        self.wakeups = wakeups or Wakeups(
            store.redis, store.keys.wake, seats=seats(settings.concurrency)
        )
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self._held: set[tuple[str, str]] = set()
        self._users: dict[Setup, int] = {}  # tasks using each setup (under _held_lock)
        self._held_lock = threading.Lock()
        self.threads_per_subscriber = max(1, settings.concurrency // 2)

    @property
    def config(self) -> SubscribersConfig:
        return self.setup.config

    @property
    def sender(self) -> Sender:
        return self.setup.sender

    def reconfigure(self, config: SubscribersConfig, sender: Sender) -> Setup:
        """Swap in a reloaded subscribers file for the tasks that start from now on (one
        reference assignment); returns the setup tasks in flight keep using."""
        new = Setup.of(config, sender)
        with self._held_lock:
            old, self.setup = self.setup, new
            idle = old not in self._users
        if idle:
            old.sender.close()
        return old

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def drain(self, *, keep_armed: bool = False) -> Drained:
        """Fan out the next batch of pending events (publish order) in one script call."""
        routes = self.setup.routes
        drained = self.store.drain(
            routes, batch=DRAIN_BATCH, now_iso=_iso(self.now_ms()), keep_armed=keep_armed
        )
        if drained.missing:
            log.warning("%d event(s) had no stored record (expired?)", drained.missing)
        return drained

    def serve(
        self,
        subscriber_id: str,
        token: str,
        send: SendTriggers,
        *,
        time_slice_s: float = TIME_SLICE_S,
    ) -> Served:
        """Attempt the subscriber's ready deliveries while slot ``token`` is live.

        Claims a chunk at a time in one script call and records results in batches, so Redis
        costs two round trips per chunk, not per delivery. A crash loses only unrecorded
        results: those deliveries are sent again, under the same ``webhook-id``, once the lease
        expires. Returns when nothing is left, or when the time slice is used up (``resend``).
        """
        served = Served()
        started = time.monotonic()
        slot = (subscriber_id, token)
        with self._held_lock:
            setup = self.setup
            mine = sum(1 for held_sub, _ in self._held if held_sub == subscriber_id)
            full = mine >= self.threads_per_subscriber
            if not full:
                self._held.add(slot)
                self._users[setup] = self._users.get(setup, 0) + 1
        sub = setup.config.by_id.get(subscriber_id)
        budget_s = attempt_bound_s(sub.timeout_s if sub else 0.0) + LEASE_MARGIN_S
        lease_ms = int(2 * budget_s * 1000)
        if full:
            # Half this worker's threads at most: a slow endpoint never takes them all.
            self.store.release(subscriber_id, token)
            served.counts["released"] += 1
            return served
        unrecorded: list[tuple[Claim, Finish]] = []
        try:
            # With nothing left, the slot lingers, woken when work comes (delivery.wake); the
            # claim after the linger releases it: what follows at a moderate rate needs no
            # trigger of its own. A chunk's last results are recorded with the next claim.
            with self.wakeups.linger(slot_name(subscriber_id, token)) as linger:
                while True:
                    finished, unrecorded = unrecorded, []
                    batch = self._claim(
                        subscriber_id,
                        token,
                        finished,
                        most=self.settings.deliver_chunk,
                        lease_ms=lease_ms,
                        bound=sub.max_in_flight if sub else 1,
                        keep=linger.keep(),
                    )
                    if batch is None:
                        return served
                    if batch.claims:
                        linger.worked()
                        if batch.more:
                            send(batch.more)
                        counts, unrecorded = self._run(batch, setup, sub, budget_s, lease_ms)
                        served.counts += counts
                    else:
                        linger.wait()
                    if time.monotonic() - started > time_slice_s:
                        served.resend = True
                        return served
        finally:
            self._record(unrecorded)
            with self._held_lock:
                self._held.discard(slot)
                users = self._users.pop(setup) - 1
                if users:
                    self._users[setup] = users
                retired = not users and setup is not self.setup
            if retired:
                setup.sender.close()

    def heartbeat(self) -> None:
        """Renew the slots this process's tasks hold (called every second by a thread)."""
        with self._held_lock:
            held = list(self._held)
        self.store.heartbeat(held)

    def _run(
        self,
        batch: ClaimBatch,
        setup: Setup,
        sub: Subscriber | None,
        budget_s: float,
        lease_ms: int,
    ) -> tuple[Counter[str], list[tuple[Claim, Finish]]]:
        """Attempt claimed deliveries in order, recording results in batches; returns the counts
        and the last results, not yet recorded (the caller records them with its next claim)."""
        counts: Counter[str] = Counter()
        claims = list(batch.claims)
        done: list[tuple[Claim, Finish]] = []
        flushed_at = time.monotonic()
        index = 0
        while index < len(claims):
            if claims[index].expires_at - time.monotonic() < budget_s:  # keep the rest leased
                self._record(done)
                done, flushed_at = [], time.monotonic()
                kept = self.store.extend(claims[index:], lease_ms=lease_ms)
                if len(kept) < len(claims) - index:
                    log.warning(
                        "%d lease(s) to %s lapsed before their attempt; left to their new owner",
                        len(claims) - index - len(kept),
                        claims[index].subscriber_id,
                    )
                claims[index:] = kept
                continue
            claim = claims[index]
            finish = self._attempt(claim, setup, sub, batch.disabled_reason)
            counts[finish.attempt["outcome"]] += 1
            done.append((claim, finish))
            index += 1
            if time.monotonic() - flushed_at > FLUSH_INTERVAL_S:
                self._record(done)
                done, flushed_at = [], time.monotonic()
        return counts, done

    def _attempt(
        self, claim: Claim, setup: Setup, subscriber: Subscriber | None, disabled: str
    ) -> Finish:
        """Make one attempt (or decide none can be made) and say what to record."""
        if subscriber is None:
            return self._unattempted(claim, None, REMOVED_REASON)
        if disabled:
            return self._unattempted(claim, subscriber, disabled)
        if not claim.body:
            return self._unattempted(claim, subscriber, "event record expired before delivery")
        result = setup.sender.attempt(subscriber, claim.event_id, claim.body)
        now = self.clock()
        policy = setup.config.policy(subscriber)
        decision = decide(
            policy,
            claim.attempt,
            status=result.status,
            error=result.error,
            retry_after=result.retry_after,
            now=datetime.fromtimestamp(now, UTC),
            rng=self.rng,
            scale=self.settings.schedule_scale,
        )
        delivered = decision.outcome is Outcome.DELIVERED
        metrics.record_attempt(
            claim.subscriber_id,
            decision.outcome.value,
            result.duration_ms / 1000,
            publish_to_delivery_s=(claim.server_ms(time.monotonic()) - claim.published_at) / 1000
            if delivered and claim.published_at
            else None,
        )
        if not delivered:
            log.warning(
                "delivery %s attempt %d to %s: %s -> %s%s",
                claim.delivery_id,
                claim.attempt,
                claim.subscriber_id,
                result.status if result.status is not None else result.error_text,
                decision.outcome.value,
                f" (retry in {decision.delay_s:.1f} s)" if decision.delay_s is not None else "",
            )
        return self._finish(
            claim,
            subscriber,
            result,
            decision,
            now,
            disable_after_s=policy.disable_after_s * self.settings.schedule_scale,
        )

    def _finish(
        self,
        claim: Claim,
        subscriber: Subscriber | None,
        result: AttemptResult,
        decision: Decision,
        now: float,
        *,
        disable_after_s: float = 0.0,
        attempted: bool = True,
    ) -> Finish:
        now_ms = int(now * 1000)
        delay_ms = int(decision.delay_s * 1000) if decision.delay_s is not None else None
        next_due = now_ms + delay_ms if delay_ms is not None else None
        url = redact_url(str(subscriber.url)) if subscriber else ""
        attempt = {
            "attempt": claim.attempt,
            "at": _iso(now_ms - result.duration_ms),
            "trigger": claim.trigger,
            "url": url,
            "status": result.status,
            "error": result.error_text,
            "duration_ms": round(result.duration_ms, 1),
            "response": result.response_excerpt,
            "outcome": decision.outcome.value,
            "next_due": _iso(next_due) if next_due else None,
        }
        letter = None
        if decision.outcome is not Outcome.DELIVERED:  # a retry may still end in auto-disable
            letter = {
                "delivery_id": claim.delivery_id,
                "event_id": claim.event_id,
                "subscriber_id": claim.subscriber_id,
                "url": url,
                "event_type": _event_type(claim.body),
                "attempts": claim.attempt,
                "dead_at": _iso(now_ms),
                "body": claim.body.decode(errors="replace"),
            }
        return Finish(
            decision.outcome.value if attempted else "skipped",
            attempt,
            delay_ms,
            decision.reason,
            letter,
            disable_after_ms=int(disable_after_s * 1000),
        )

    @_RECORDING
    def _record(self, done: Sequence[tuple[Claim, Finish]]) -> None:
        if done:
            self.store.finish(done)

    def _claim(
        self, subscriber_id: str, token: str, finished: list[tuple[Claim, Finish]], **kw: Any
    ) -> ClaimBatch | None:
        """Claim the next chunk, recording ``finished`` attempts first in the same round trip."""
        if not finished:
            return self.store.claim(subscriber_id, token, **kw)
        return self._record_and_claim(subscriber_id, token, finished, **kw)

    @_RECORDING
    def _record_and_claim(
        self, subscriber_id: str, token: str, finished: list[tuple[Claim, Finish]], **kw: Any
    ) -> ClaimBatch | None:
        return self.store.claim(subscriber_id, token, finished=finished, **kw)

    def _unattempted(self, claim: Claim, subscriber: Subscriber | None, reason: str) -> Finish:
        """Dead-letter without an HTTP attempt (and without counting against the subscriber)."""
        log.warning("delivery %s dead-lettered without an attempt: %s", claim.delivery_id, reason)
        result = AttemptResult(
            status=None, duration_ms=0.0, error=PermanentDeliveryError(f"not attempted: {reason}")
        )
        decision = Decision(Outcome.DEAD, reason=reason)
        return self._finish(claim, subscriber, result, decision, self.clock(), attempted=False)
