"""Fan-out and delivery: applies the pure decisions to the durable records."""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import redis
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from producers.events import EVENT_TYPES
from producers.user import format_timestamp
from worker.errors import PermanentDeliveryError
from worker.outcome import Decision, Outcome, decide
from worker.sender import AttemptResult, Sender
from worker.settings import WorkerSettings
from worker.store import Claim, Finish, Store, split_delivery_id
from worker.subscribers import Subscriber, SubscribersConfig

log = logging.getLogger(__name__)

#: How long the set of failing subscribers is cached.
FAILING_CACHE_S = 1.0

#: Grace beyond an attempt's own deadline before its lease may be taken over.
LEASE_MARGIN_S = 5.0

#: Results are written to Redis at least this often while a chunk is being delivered.
FLUSH_INTERVAL_S = 0.1


def chunks_by_subscriber(delivery_ids: Iterable[str], size: int) -> list[list[str]]:
    """Group deliveries per subscriber (one slow subscriber then delays only its own chunks)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for did in delivery_ids:
        groups[split_delivery_id(did)[1]].append(did)
    return [ids[i : i + size] for ids in groups.values() for i in range(0, len(ids), size)]


def redact_url(url: str) -> str:
    """Scheme, host and path only: query strings often carry tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _event_type(body: bytes) -> str:
    try:
        return str(json.loads(body)["event"])
    except (ValueError, KeyError, TypeError):
        return ""


def _iso(ms: float) -> str:
    return format_timestamp(datetime.fromtimestamp(ms / 1000, UTC))


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
    ) -> None:
        self.config = config
        self.store = store
        self.sender = sender
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self._routes = {t: [s.id for s in config.matching(t)] for t in EVENT_TYPES}
        self._timeouts = {s.id: s.timeout_s for s in config.subscribers}
        self._failing: frozenset[str] = frozenset()
        self._failing_read_at = float("-inf")

    def failing_subscribers(self) -> frozenset[str]:
        """Subscribers whose last attempt failed; cached for a second (read on every dispatch)."""
        now = time.monotonic()
        if now - self._failing_read_at > FAILING_CACHE_S:
            self._failing = self.store.failing_subscribers([s.id for s in self.config.subscribers])
            self._failing_read_at = now
        return self._failing

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def dispatch(self, event_ids: Sequence[str]) -> tuple[list[str], dict[str, int]]:
        """Fan events out, then deliver the first healthy subscriber's share right here.

        One script call creates every delivery record and claims up to a chunk of them for this
        worker, so a lone event costs one call before its attempt. Returns the ids of the
        deliveries left queued (the caller triggers them) and the counts of what was attempted.
        """
        failing = self.failing_subscribers()
        inline = [s.id for s in self.config.subscribers if s.enabled and s.id not in failing]
        now = self.now_ms()
        budget_ms = self._attempt_budget_ms(inline)
        queued, claims, missing = self.store.dispatch(
            event_ids,
            self._routes,
            inline=inline,
            inline_limit=self.settings.deliver_chunk,
            now_ms=now,
            lost_after_ms=now + int(self.settings.visibility_timeout_s * 1000),
            lease_until_ms=now + 2 * budget_ms,
        )
        for event_id in missing:
            log.warning("event %s has no stored record (expired?); nothing to send", event_id)
        log.debug(
            "dispatched %d event(s): %d delivery(ies) here, %d queued",
            len(event_ids),
            len(claims),
            len(queued),
        )
        return queued, self._run(claims, budget_ms)

    def deliver(self, delivery_ids: Sequence[str]) -> dict[str, int]:
        """Attempt every delivery of ``delivery_ids`` this worker can claim, in order.

        One script call claims them all and one records their results (every
        ``FLUSH_INTERVAL_S`` at least), so Redis costs two round trips per chunk, not per
        delivery. A crash loses only unrecorded results: those deliveries are sent again,
        under the same ``webhook-id``, once the lease expires.
        """
        budget_ms = self._attempt_budget_ms({split_delivery_id(d)[1] for d in delivery_ids})
        claims = self.store.claim(delivery_ids, lease_until_ms=self.now_ms() + 2 * budget_ms)
        counts = self._run(claims, budget_ms)
        if len(claims) < len(delivery_ids):
            counts["skipped"] = len(delivery_ids) - len(claims)
        return counts

    def _run(self, claims: list[Claim], budget_ms: int) -> dict[str, int]:
        """Attempt claimed deliveries in order, recording results in batches."""
        counts: Counter[str] = Counter()
        done: list[tuple[Claim, Finish]] = []
        flushed_at = time.monotonic()
        for index in range(len(claims)):
            now_ms = self.now_ms()
            if claims[index].lease - now_ms < budget_ms:  # slow going: keep the rest leased
                self._record(done)
                done, flushed_at = [], time.monotonic()
                claims[index:] = self.store.extend(
                    claims[index:], lease_until_ms=now_ms + 2 * budget_ms
                )
            claim = claims[index]
            finish = self._attempt(claim, self.config.by_id.get(claim.subscriber_id))
            counts[finish.attempt["outcome"]] += 1
            done.append((claim, finish))
            if time.monotonic() - flushed_at > FLUSH_INTERVAL_S:
                self._record(done)
                done, flushed_at = [], time.monotonic()
        self._record(done)
        return dict(counts)

    def _attempt_budget_ms(self, subscriber_ids: Iterable[str]) -> int:
        """The longest one attempt to any of these subscribers may take, with a margin."""
        timeouts = [self._timeouts.get(sid, 0.0) for sid in subscriber_ids]
        return int((max(timeouts, default=0.0) + LEASE_MARGIN_S) * 1000)

    def _attempt(self, claim: Claim, subscriber: Subscriber | None) -> Finish:
        """Make one attempt (or decide none can be made) and say what to record."""
        if subscriber is None:
            reason = f"subscriber {claim.subscriber_id!r} is not in the subscribers file"
            return self._unattempted(claim, None, reason)
        if claim.disabled_reason:
            return self._unattempted(claim, subscriber, claim.disabled_reason)
        if not claim.body:
            return self._unattempted(claim, subscriber, "event record expired before delivery")
        result = self.sender.attempt(subscriber, claim.event_id, claim.body)
        now = self.clock()
        policy = self.config.policy(subscriber)
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
        if decision.outcome is not Outcome.DELIVERED:
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
        next_due = now_ms + int(decision.delay_s * 1000) if decision.delay_s is not None else None
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
                "dead_at_ms": now_ms,
                "body": claim.body.decode(errors="replace"),
            }
        return Finish(
            decision.outcome.value if attempted else "skipped",
            attempt,
            next_due,
            decision.reason,
            letter,
            disable_after_ms=int(disable_after_s * 1000),
        )

    # The attempts happened: recording them must survive a Redis hiccup. A retry after a lost
    # reply may log an attempt twice, but the state moves once (the lease check in the script).
    @retry(
        retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
        wait=wait_exponential(multiplier=0.05, max=2),
        stop=stop_after_delay(30),
        reraise=True,
    )
    def _record(self, done: Sequence[tuple[Claim, Finish]]) -> None:
        if done:
            self.store.finish(done, now_ms=self.now_ms())

    def _unattempted(self, claim: Claim, subscriber: Subscriber | None, reason: str) -> Finish:
        """Dead-letter without an HTTP attempt (and without counting against the subscriber)."""
        log.warning("delivery %s dead-lettered without an attempt: %s", claim.delivery_id, reason)
        result = AttemptResult(
            status=None, duration_ms=0.0, error=PermanentDeliveryError(f"not attempted: {reason}")
        )
        decision = Decision(Outcome.DEAD, reason=reason)
        return self._finish(claim, subscriber, result, decision, self.clock(), attempted=False)
