"""Fan-out and delivery: applies the pure decisions to the durable records."""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.config.subscribers import Subscriber, SubscribersConfig
from reseller_webhooks.worker.delivery.attempt_record import attempt_record, iso
from reseller_webhooks.worker.delivery.burst_log import BurstLog
from reseller_webhooks.worker.delivery.chunk_streak import ChunkStreak, give_back
from reseller_webhooks.worker.delivery.health import RecentRate, throttle
from reseller_webhooks.worker.delivery.lane import Lane, Setup
from reseller_webhooks.worker.delivery.observe import observe
from reseller_webhooks.worker.delivery.outcome import Decision, Outcome, decide
from reseller_webhooks.worker.delivery.recording import RECORDING, REFUSED
from reseller_webhooks.worker.delivery.seats import Pace
from reseller_webhooks.worker.delivery.wake import Wakeups, seats, slot_name
from reseller_webhooks.worker.errors import PermanentDeliveryError
from reseller_webhooks.worker.http.sender import AttemptResult, Sender
from reseller_webhooks.worker.ops import outage
from reseller_webhooks.worker.ops.tracing import AttemptTracing
from reseller_webhooks.worker.records.shapes import Claim, ClaimBatch, Drained, Finish, Trigger
from reseller_webhooks.worker.records.store import Store

log = logging.getLogger(__name__)

#: Results are written to Redis at least this often while a chunk is being delivered.
FLUSH_INTERVAL_S = 0.1

#: Most events one drain script call fans out.
DRAIN_BATCH = 500

#: A task that has worked this long hands its trigger back to the queue, behind the others.
TIME_SLICE_S = 2.0

SendTriggers = Callable[[Sequence[Trigger]], None]


#: Logged once per burst of events no subscriber takes (counted in the tally, and a metric).
UNMATCHED_MESSAGE = (
    "%d event(s) matched no subscriber and were dropped (webhooks_unmatched_events_total);"
    " check the subscribers' events: lists"
)

#: Why a delivery to a subscriber no longer in the file dies without an attempt.
REMOVED_REASON = "subscriber removed from the subscribers file"


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
        tracing: AttemptTracing | None = None,
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
        #: Attempt spans, or ``None`` while tracing is off (``ops.tracing``).
        self.tracing = tracing
        self._held: set[tuple[str, str]] = set()
        self._users: dict[Setup, int] = {}  # tasks using each setup (under _held_lock)
        self._held_lock = threading.Lock()
        #: Threads this worker runs deliver tasks on (``--concurrency`` may override the setting).
        self.threads = settings.concurrency
        #: The subscribers' speed, for sharing the threads (``delivery.seats``).
        self.pace = Pace()
        self._unmatched = BurstLog(log, UNMATCHED_MESSAGE)
        self._recent = RecentRate()  # attempts/s per subscriber, where a 429 cuts from

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

    @REFUSED
    def drain(self, *, keep_armed: bool = False) -> Drained:
        """Fan out the next batch of pending events (publish order) in one script call."""
        routes = self.setup.routes
        drained = self.store.drain(
            routes, batch=DRAIN_BATCH, now_iso=iso(self.now_ms()), keep_armed=keep_armed
        )
        if drained.missing:
            log.warning("%d event(s) had no stored record (expired?)", drained.missing)
        self._unmatched.add(drained.unmatched)
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
        slot = (subscriber_id, token)
        setup = self._take_seat(slot)
        if setup is None:
            # Slow endpoints never take every thread (``delivery.seats``).
            self.store.release(subscriber_id, token)
            return Served(Counter(released=1))
        try:
            return self._serve_chunks(slot, setup, send, time.monotonic() + time_slice_s)
        finally:
            self._leave_seat(slot, setup)

    def _take_seat(self, slot: tuple[str, str]) -> Setup | None:
        """Hold ``slot`` and count a task on the current setup; ``None`` when the subscriber
        already has its share of this worker's threads (``delivery.seats``)."""
        now = time.monotonic()
        with self._held_lock:
            held = (sub for sub, _ in self._held)
            if not self.pace.may_sit(slot[0], self.threads, held, now):
                return None
            setup = self.setup
            self._held.add(slot)
            self._users[setup] = self._users.get(setup, 0) + 1
        return setup

    def _leave_seat(self, slot: tuple[str, str], setup: Setup) -> None:
        """Drop ``slot``; the last task on a replaced setup closes its connections."""
        with self._held_lock:
            self._held.discard(slot)
            users = self._users.pop(setup) - 1
            if users:
                self._users[setup] = users
            retired = not users and setup is not self.setup
        if retired:
            setup.sender.close()

    def _serve_chunks(
        self, slot: tuple[str, str], setup: Setup, send: SendTriggers, ends_at: float
    ) -> Served:
        """Claim a chunk, attempt it, and again, until the slot is released or the slice ends
        (``time.monotonic()`` past ``ends_at``).

        With nothing left, the slot lingers, woken when work comes (``delivery.wake``); the
        claim after the linger releases it: what follows at a moderate rate needs no trigger of
        its own. A chunk's last results are recorded with the next claim (one round trip)."""
        lane = Lane.of(*slot, setup)
        served = Served()
        unrecorded: list[tuple[Claim, Finish]] = []
        try:
            with self.wakeups.linger(slot_name(*slot)) as linger:
                while True:
                    finished, unrecorded = unrecorded, []
                    batch = self._claim(lane, finished, keep=linger.keep())
                    if batch is None:  # released: nothing left after the linger, or held
                        return served
                    if batch.claims:
                        linger.worked()
                        unrecorded = self._work(lane, batch, send, served)
                    elif batch.hold_ms:  # a rate token refills within a short hold
                        time.sleep(batch.hold_ms / 1000)
                    else:
                        linger.wait()
                    if time.monotonic() > ends_at:
                        served.resend = True
                        return served
        finally:
            self._record(unrecorded)

    def _work(
        self, lane: Lane, batch: ClaimBatch, send: SendTriggers, served: Served
    ) -> list[tuple[Claim, Finish]]:
        """Hand the rest of the ready work to other threads, then attempt the chunk; returns
        the results not yet recorded."""
        if batch.more:
            send(batch.more)
        counts, unrecorded = self._run(lane, batch)
        served.counts += counts
        return unrecorded

    def heartbeat(self) -> None:
        """Renew the slots this process's tasks hold (called every second by a thread)."""
        with self._held_lock:
            held = list(self._held)
        self.store.heartbeat(held)

    def _run(
        self, lane: Lane, batch: ClaimBatch
    ) -> tuple[Counter[str], list[tuple[Claim, Finish]]]:
        """Attempt claimed deliveries in order, recording results in batches; returns the counts
        and the last results, not yet recorded (the caller records them with its next claim)."""
        setup, sub, budget_s = lane.setup, lane.subscriber, lane.budget_s
        counts: Counter[str] = Counter()
        claims = list(batch.claims)
        done: list[tuple[Claim, Finish]] = []
        flushed_at, index, streak = time.monotonic(), 0, ChunkStreak()
        while index < len(claims):
            if claims[index].expires_at - time.monotonic() < budget_s:  # keep the rest leased
                self._record(done)
                done, flushed_at = [], time.monotonic()
                claims[index:] = self._extend(claims[index:], lane.lease_ms)
                continue
            claim = claims[index]
            finish = self._attempt(claim, setup, sub, batch.disabled_reason)
            counts[finish.attempt["outcome"]] += 1
            done.append((claim, finish))
            index += 1
            if streak.ends(finish.outcome):  # the endpoint fails: the rest goes back untried
                give_back(self.store, claims[index:])
                break
            if time.monotonic() - flushed_at > FLUSH_INTERVAL_S:
                self._record(done)
                done, flushed_at = [], time.monotonic()
        return counts, done

    def _extend(self, claims: list[Claim], lease_ms: int) -> list[Claim]:
        """Renew the leases of ``claims`` not yet attempted; those already lapsed (and maybe
        claimed by another worker) are left out."""
        kept = self.store.extend(claims, lease_ms=lease_ms)
        if len(kept) < len(claims):
            log.warning(
                "%d lease(s) to %s lapsed before their attempt; left to their new owner",
                len(claims) - len(kept),
                claims[0].subscriber_id,
            )
        return kept

    def _attempt(
        self, claim: Claim, setup: Setup, subscriber: Subscriber | None, disabled: str
    ) -> Finish:
        """Make one attempt (or decide none can be made) and say what to record: send,
        classify, observe, record."""
        if subscriber is None:
            return self._unattempted(claim, None, REMOVED_REASON)
        if disabled:
            return self._unattempted(claim, subscriber, disabled)
        if not claim.body:
            return self._unattempted(claim, subscriber, "event record expired before delivery")
        if self.tracing is None:
            return self._send(claim, setup, subscriber, "")
        send = functools.partial(self._send, claim, setup, subscriber)
        return self.tracing.traced(claim, subscriber.send_traceparent, send)

    def _send(self, claim: Claim, setup: Setup, subscriber: Subscriber, traceparent: str) -> Finish:
        """Send, classify, observe, and say what to record."""
        result = setup.sender.attempt(
            subscriber,
            claim.event_id,
            claim.body,
            sequence=claim.sequence,
            traceparent=traceparent,
        )
        self.pace.attempted(subscriber.id, result.duration_ms / 1000)
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
        throttled = throttle(
            decision,
            result.status,
            result.retry_after,
            policy=policy,
            now=datetime.fromtimestamp(now, UTC),
            scale=self.settings.schedule_scale,
        )
        observe(claim, result, throttled.decision)
        return attempt_record(
            claim,
            subscriber.shown_url,
            result,
            throttled.decision,
            now,
            disable_after_s=policy.disable_after_s * self.settings.schedule_scale,
            rate_limit=subscriber.rate_limit_per_s,
            pause_s=throttled.pause_s,
            measured_rate=self._recent.note(claim.subscriber_id),
            breaker_after=subscriber.breaker_after,
        )

    @RECORDING
    def _record(self, done: Sequence[tuple[Claim, Finish]]) -> None:
        if done:
            self.store.finish(done)
            outage.REDIS.accepted()

    def _claim(
        self, lane: Lane, finished: list[tuple[Claim, Finish]], *, keep: bool
    ) -> ClaimBatch | None:
        """Claim the next chunk, recording ``finished`` attempts first in the same round trip;
        ``None`` when the slot was released (nothing ready, and ``keep`` false)."""
        kw: dict[str, Any] = {
            "most": self.pace.chunk(lane.subscriber_id, self.settings.deliver_chunk, TIME_SLICE_S),
            "lease_ms": lane.lease_ms,
            "bound": lane.bound,
            "keep": keep,
            "rate": lane.subscriber.rate_limit_per_s if lane.subscriber else None,
            "burst": lane.subscriber.rate_burst if lane.subscriber else None,
        }
        if not finished:
            return self.store.claim(lane.subscriber_id, lane.token, **kw)
        return self._record_and_claim(lane.subscriber_id, lane.token, finished, **kw)

    @RECORDING
    def _record_and_claim(
        self, subscriber_id: str, token: str, finished: list[tuple[Claim, Finish]], **kw: Any
    ) -> ClaimBatch | None:
        batch = self.store.claim(subscriber_id, token, finished=finished, **kw)
        outage.REDIS.accepted()
        return batch

    def _unattempted(self, claim: Claim, subscriber: Subscriber | None, reason: str) -> Finish:
        """Dead-letter without an HTTP attempt (and without counting against the subscriber)."""
        log.warning("delivery %s dead-lettered without an attempt: %s", claim.delivery_id, reason)
        result = AttemptResult(
            status=None, duration_ms=0.0, error=PermanentDeliveryError(f"not attempted: {reason}")
        )
        decision = Decision(Outcome.DEAD, reason=reason)
        url = subscriber.shown_url if subscriber else ""
        return attempt_record(claim, url, result, decision, self.clock(), attempted=False)
