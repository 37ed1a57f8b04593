"""Fan-out and delivery: applies the pure decisions to the durable records."""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import redis
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

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

    def dispatch(self, event_ids: Sequence[str]) -> list[str]:
        """Create one delivery per enabled matching subscriber; returns the new delivery ids."""
        routes: list[tuple[str, list[str]]] = []
        for event_id, event_type in zip(
            event_ids, self.store.load_event_types(event_ids), strict=True
        ):
            if event_type is None:
                log.warning("event %s has no stored record (expired?); nothing to send", event_id)
                self.store.drop_dispatch(event_id)
                continue
            routes.append((event_id, [s.id for s in self.config.matching(event_type)]))
        now = self.now_ms()
        lost_after = now + int(self.settings.visibility_timeout_s * 1000)
        created = self.store.fan_out(routes, now_ms=now, lost_after_ms=lost_after)
        log.info("dispatched %d event(s) into %d delivery(ies)", len(routes), len(created))
        return created

    def deliver(self, delivery_ids: Sequence[str]) -> dict[str, int]:
        """Attempt each delivery this worker can claim; returns counts by outcome."""
        counts: dict[str, int] = {}
        for did in delivery_ids:
            outcome = self.deliver_one(did)
            key = outcome or "skipped"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def deliver_one(self, did: str) -> str | None:
        subscriber = self.config.by_id.get(split_delivery_id(did)[1])
        timeout_s = subscriber.timeout_s if subscriber else 0.0
        lease = self.now_ms() + int((2 * timeout_s + LEASE_MARGIN_S) * 1000)
        claim = self.store.claim(did, lease_until_ms=lease)
        if claim is None:
            return None  # finished, waiting, or owned by someone else: a stale or duplicate trigger
        if subscriber is None:
            return self._end_unattempted(
                claim, None, f"subscriber {claim.subscriber_id!r} is not in the subscribers file"
            )
        if claim.disabled_reason:
            return self._end_unattempted(claim, subscriber, claim.disabled_reason)
        if not claim.body:
            return self._end_unattempted(claim, subscriber, "event record expired before delivery")
        result = self.sender.attempt(subscriber, claim.event_id, claim.body)
        now = self.clock()
        decision = decide(
            self.config.policy(subscriber),
            claim.attempt,
            status=result.status,
            error=result.error,
            retry_after=result.retry_after,
            now=datetime.fromtimestamp(now, UTC),
            rng=self.rng,
            scale=self.settings.schedule_scale,
        )
        self._finish(claim, subscriber, result, decision, now)
        return decision.outcome.value

    def _finish(
        self,
        claim: Claim,
        subscriber: Subscriber | None,
        result: AttemptResult,
        decision: Decision,
        now: float,
        *,
        attempted: bool = True,
    ) -> None:
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
        disable_after_s = self.config.policy(subscriber).disable_after_s if subscriber else 0.0
        self._record(
            claim,
            Finish(
                decision.outcome.value if attempted else "skipped",
                attempt,
                next_due,
                decision.reason,
                letter,
            ),
            now_ms=now_ms,
            disable_after_ms=int(disable_after_s * self.settings.schedule_scale * 1000),
        )
        level = logging.INFO if decision.outcome is Outcome.DELIVERED else logging.WARNING
        log.log(
            level,
            "delivery %s attempt %d to %s: %s -> %s%s",
            claim.delivery_id,
            claim.attempt,
            claim.subscriber_id,
            result.status if result.status is not None else result.error_text,
            decision.outcome.value,
            f" (retry in {decision.delay_s:.1f} s)" if decision.delay_s is not None else "",
        )

    # The attempt happened: recording it must survive a Redis hiccup. A retry after a lost reply
    # may log the attempt twice, but the state moves once (the lease check in the script).
    @retry(
        retry=retry_if_exception_type((redis.ConnectionError, redis.TimeoutError)),
        wait=wait_exponential(multiplier=0.05, max=2),
        stop=stop_after_delay(30),
        reraise=True,
    )
    def _record(self, claim: Claim, result: Finish, *, now_ms: int, disable_after_ms: int) -> None:
        self.store.finish(claim, result, now_ms=now_ms, disable_after_ms=disable_after_ms)

    def _end_unattempted(self, claim: Claim, subscriber: Subscriber | None, reason: str) -> str:
        """Dead-letter without an HTTP attempt (and without counting against the subscriber)."""
        result = AttemptResult(
            status=None, duration_ms=0.0, error=PermanentDeliveryError(f"not attempted: {reason}")
        )
        decision = Decision(Outcome.DEAD, reason=reason)
        self._finish(claim, subscriber, result, decision, self.clock(), attempted=False)
        return Outcome.DEAD.value
