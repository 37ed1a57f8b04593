"""What an operator does, for the command line and the console alike.

Every query and transition an operator runs (subscriber health, enable and disable, finding,
replaying and purging dead letters, the story of a delivery, an event or a user) is here once;
``cli.commands`` and ``console`` only present it. Nothing here reads a subscriber secret:
the subscribers file is loaded without them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.config.subscribers import Subscriber, SubscribersConfig, load_config
from reseller_webhooks.worker.delivery.health import LimitState, limit_state
from reseller_webhooks.worker.delivery.runtime import make_store
from reseller_webhooks.worker.errors import SubscribersDisabledError, UnknownSubscriberError
from reseller_webhooks.worker.ops.deployment_metrics import StatsReader, SubscriberStats
from reseller_webhooks.worker.records.activity import Activity, Attempt, EventStory, Rate, rates
from reseller_webhooks.worker.records.breaker import BreakerView, read_breaker
from reseller_webhooks.worker.records.deadletters import (
    CHUNK,
    DeadLetter,
    DeadLetters,
    Filter,
    Page,
)
from reseller_webhooks.worker.records.shapes import Trigger, iso_ms
from reseller_webhooks.worker.records.store import DISABLED_BY_OPERATOR, Store

#: Most letters one dead-letter page reads to find those of an event type.
DEAD_LETTER_SCAN = 2000
#: ``--since`` durations: a number and one of these units.
SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, *, now: float | None = None) -> int:
    """An RFC 3339 time, or a duration back from ``now`` like ``90m``, ``2h``, ``3d``, as epoch
    milliseconds; ``ValueError`` says what is wrong."""
    value = value.strip()
    if value[-1:] in SINCE_UNITS and value[:-1].isdigit():
        now = time.time() if now is None else now
        return int((now - int(value[:-1]) * SINCE_UNITS[value[-1]]) * 1000)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{value!r}: give an RFC 3339 time or a duration like 90m, 2h, 3d"
        ) from None
    if when.tzinfo is None:
        raise ValueError("the time needs a UTC offset, e.g. Z")
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class SubscriberHealth:
    """A subscriber as the file and the records say it is."""

    subscriber_id: str
    in_file: bool
    enabled_in_file: bool
    state: dict[str, str]
    stats: SubscriberStats | None = None
    rate: Rate | None = None
    #: The configured ``rate_limit_per_s`` (None: none) and Redis's clock when ``state`` was read.
    rate_limit: float | None = None
    now_ms: int = 0

    @property
    def disabled(self) -> bool:
        return self.state.get("disabled") == "1"

    @property
    def reason(self) -> str:
        return self.state.get("reason", "")

    @property
    def disabled_at_ms(self) -> int | None:
        return _int(self.state.get("disabled_at"))

    @property
    def failing_since_ms(self) -> int | None:
        return _int(self.state.get("failing_since"))

    @property
    def failures(self) -> int:
        return _int(self.state.get("failures")) or 0

    @property
    def status(self) -> str:
        """``removed`` (not in the file), ``off`` (``enabled: false`` in the file),
        ``disabled``, ``failing`` or ``ok``."""
        if not self.in_file:
            return "removed"
        if not self.enabled_in_file:
            return "off"
        if self.disabled:
            return "disabled"
        return "failing" if self.failing_since_ms is not None else "ok"

    def describe(self) -> str:
        """The line ``subscribers status`` prints after the id."""
        if not self.enabled_in_file:
            return "off in config"
        if self.disabled:
            return f"DISABLED: {self.reason}{self.breaker_note()}"
        text = "failing" if self.failing_since_ms is not None else "ok"
        if self.failures:
            text += f" ({self.failures} failed attempt(s) in a row)"
        limits = self.describe_limits()
        return (f"{text}; {limits}" if limits else text) + self.breaker_note()

    @property
    def breaker(self) -> BreakerView:
        """The circuit breaker as its fields say now (docs/endpoint-health.md)."""
        return read_breaker(self.state, self.now_ms or int(time.time() * 1000))

    @property
    def breaker_text(self) -> str:
        """``closed``, ``half-open (...)``, ``open (next probe <time>)``: for people."""
        view = self.breaker
        return view.describe(iso_ms(view.next_probe_ms) if view.next_probe_ms else "")

    def breaker_note(self) -> str:
        """``; breaker open (next probe ...)`` while the breaker is not closed, else ''."""
        return "" if self.breaker.state == "closed" else "; breaker " + self.breaker_text

    @property
    def limits(self) -> LimitState:
        """Its rate limit now: configured, lowered by 429s, paused by a Retry-After."""
        return limit_state(self.state, self.rate_limit, self.now_ms)

    def describe_limits(self) -> str:
        """The rate limit and pause as shown ('' when unlimited and not paused)."""
        now = self.limits
        parts = []
        if now.rate is not None:
            text = f"rate {now.rate:.1f}/s"
            if now.adaptive:
                configured = f"{self.rate_limit:g}/s" if self.rate_limit else "none"
                text += f" (lowered by 429s; configured {configured})"
            parts.append(text)
        if now.paused_until_ms:
            parts.append(f"paused until {iso_ms(now.paused_until_ms)} (Retry-After)")
        return ", ".join(parts)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Replayed:
    replayed: list[str]
    missing: list[str]


SendTriggers = Callable[[Sequence[Trigger]], None]
#: Told after each chunk of a long action: how many ids it went through, how many it acted on.
Progress = Callable[[int, int], None]


def _no_progress(seen: int, acted: int) -> None:
    """Where nobody watches."""


class Operations:
    """The operator's queries and actions on one deployment (one Redis, one subscribers file)."""

    def __init__(self, settings: WorkerSettings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or make_store(settings)
        self.dead = DeadLetters(self.store, event_ttl_s=settings.event_retention_s)
        self.activity = Activity(self.store)
        self._stats = StatsReader(self.store, dead_ttl_s=settings.dead_letter_retention_s)

    # -- subscribers ---------------------------------------------------------------------------

    def config(self) -> SubscribersConfig:
        """The subscribers file, fully checked but with ``secret_env`` variables left unread:
        operators never sign. Read at each call, so a changed file shows at once."""
        if self.settings.subscribers is None:
            raise ConfigError(
                "WEBHOOKS_SUBSCRIBERS is not set: point it at the subscribers YAML file"
            )
        return load_config(self.settings.subscribers, resolve_secrets=False)

    def subscriber_ids(self) -> list[str]:
        """The subscribers of the file, then any other that has had deliveries."""
        return self.activity.subscriber_ids(s.id for s in self.config().subscribers)

    def subscriber(self, subscriber_id: str) -> Subscriber:
        sub = self.config().by_id.get(subscriber_id)
        if sub is None:
            raise UnknownSubscriberError(subscriber_id, self.settings.subscribers)
        return sub

    def disable(self, subscriber_id: str, reason: str = DISABLED_BY_OPERATOR) -> None:
        """Stop deliveries to a subscriber of the file; what is pending is dead-lettered."""
        self.subscriber(subscriber_id)
        self.store.disable_subscriber(subscriber_id, reason)

    def enable(self, subscriber_id: str) -> None:
        """Resume deliveries to a subscriber of the file, whoever or whatever disabled it."""
        self.subscriber(subscriber_id)
        self.store.enable_subscriber(subscriber_id)

    def health(self, *, with_numbers: bool = True) -> list[SubscriberHealth]:
        """Every subscriber of the file, then any other that has had deliveries (``removed``).
        With ``with_numbers``, its backlog, dead letters and failing time (the metrics' one
        script call) and its attempts over the last hour."""
        config = self.config()
        ids = [s.id for s in config.subscribers]
        stats: dict[str, SubscriberStats] = {}
        if with_numbers:
            snapshot = self._stats.read(ids)
            stats = {s.subscriber_id: s for s in snapshot.subscribers}
            ids += [sub for sub in stats if sub not in ids]
        hour = rates(self.store, ids) if with_numbers else {}
        pipe = self.store.redis.pipeline(transaction=False)
        for sub in ids:
            pipe.hgetall(self.store.keys.subscriber_state(sub))
        pipe.time()
        *states, (seconds, micros) = pipe.execute()
        now_ms = seconds * 1000 + micros // 1000
        return [
            SubscriberHealth(
                subscriber_id=sub,
                in_file=sub in config.by_id,
                enabled_in_file=config.by_id[sub].enabled if sub in config.by_id else False,
                state={k.decode(): v.decode() for k, v in state.items()},
                stats=stats.get(sub),
                rate=hour.get(sub),
                rate_limit=config.by_id[sub].rate_limit_per_s if sub in config.by_id else None,
                now_ms=now_ms,
            )
            for sub, state in zip(ids, states, strict=True)
        ]

    def subscriber_health(self, subscriber_id: str) -> SubscriberHealth | None:
        return next((h for h in self.health() if h.subscriber_id == subscriber_id), None)

    def recent_attempts(self, subscriber_id: str) -> list[Attempt]:
        """The subscriber's latest attempts, newest first."""
        return self.activity.recent_attempts(subscriber_id)

    # -- dead letters --------------------------------------------------------------------------

    def dead_filter(
        self,
        *,
        subscriber: str | None = None,
        event_type: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> Filter:
        """A dead-letter filter, never older than what is kept (an index may still name
        letters that expired)."""
        kept_since = int(time.time() * 1000) - self.settings.dead_letter_retention_s * 1000
        return Filter(
            subscriber or None,
            event_type or None,
            max(since_ms, kept_since) if since_ms is not None else kept_since,
            until_ms,
        )

    def dead_letter_page(self, chosen: Filter, *, offset: int, size: int) -> Page:
        """One page of the filter's dead letters, newest first: reads at most ``size`` letters,
        or a few chunks with an event type (which no index holds)."""
        most = size if chosen.event_type is None else max(size, DEAD_LETTER_SCAN)
        return self.dead.page(chosen, offset=offset, size=size, most_read=most)

    def dead_count(self, chosen: Filter) -> int:
        """How many the filter's index holds in its time range (an event type not counted)."""
        return self.dead.count(chosen)

    def server_ms(self) -> int:
        """Redis's clock, as the dead-letter indexes score by it."""
        seconds, micros = self.store.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def dead_letter(self, delivery_id: str) -> DeadLetter | None:
        return self.dead.get(delivery_id)

    def attempts(self, delivery_id: str) -> list[dict[str, object]]:
        return self.dead.attempts(delivery_id)

    def replay(self, delivery_ids: Iterable[str], send: SendTriggers) -> Replayed:
        """Send dead deliveries again: same webhook-id, fresh schedule, logged as manual.

        Refuses the whole request (``SubscribersDisabledError``) when any of them is for a
        disabled subscriber; ids that are no dead letter come back in ``missing``."""
        wanted = list(dict.fromkeys(delivery_ids))
        blocked: set[str] = set()
        for start in range(0, len(wanted), CHUNK):
            letters = self.dead.read(wanted[start : start + CHUNK])
            for sub in {x.subscriber_id for x in letters if x is not None}:
                if self.store.subscriber_state(sub).get("disabled") == "1":
                    blocked.add(sub)
        if blocked:
            raise SubscribersDisabledError(sorted(blocked))
        replayed, triggers = self.dead.replay(wanted)
        send(triggers)
        return Replayed(replayed, sorted(set(wanted) - set(replayed)))

    def purge(self, delivery_ids: Iterable[str]) -> int:
        """Delete dead letters (and their attempt logs) for good; returns how many there were."""
        return self.dead.purge(delivery_ids)

    def blocked(self, chosen: Filter) -> list[str]:
        """The disabled subscribers that hold dead letters in the filter's time range."""
        subs = [chosen.subscriber] if chosen.subscriber else self.subscriber_ids()
        pipe = self.store.redis.pipeline(transaction=False)
        for sub in subs:
            pipe.hget(self.store.keys.subscriber_state(sub), "disabled")
            pipe.zcount(self.store.keys.dead_of(sub), *chosen.bounds())
        answers = pipe.execute()
        return [
            sub
            for sub, disabled, held in zip(subs, answers[0::2], answers[1::2], strict=True)
            if disabled == b"1" and int(held)
        ]

    def replay_matching(
        self, chosen: Filter, send: SendTriggers, progress: Progress = _no_progress
    ) -> int:
        """Replay every dead letter the filter keeps, a chunk per round trip, telling
        ``progress`` after each; how many were replayed. Refuses before the first
        (``SubscribersDisabledError``) when a disabled subscriber holds any in its range."""
        blocked = self.blocked(chosen)
        if blocked:
            raise SubscribersDisabledError(blocked)
        seen = done = 0
        for size, wanted in self._matching_chunks(chosen):
            seen += size
            replayed, triggers = self.dead.replay_chunk(wanted)
            if triggers:
                send(triggers)
            done += len(replayed)
            progress(seen, done)
        return done

    def purge_matching(self, chosen: Filter, progress: Progress = _no_progress) -> int:
        """Purge every dead letter the filter keeps, a chunk per round trip; how many."""
        seen = done = 0
        for size, wanted in self._matching_chunks(chosen):
            seen += size
            done += self.dead.purge_chunk(wanted) if wanted else 0
            progress(seen, done)
        return done

    def _matching_chunks(self, chosen: Filter) -> Iterator[tuple[int, list[str]]]:
        """The filter's index a chunk at a time: the chunk's size and the ids the filter keeps
        (an event type is in no index, so with one the chunk's letters are read)."""
        for chunk in self.dead.chunks(chosen):
            if not chosen.event_type:
                yield len(chunk), chunk
                continue
            letters = self.dead.read(chunk)
            yield len(chunk), [x.delivery_id for x in letters if x and chosen.keeps(x)]

    # -- stories -------------------------------------------------------------------------------

    def lookup_delivery(self, delivery_id: str) -> list[EventStory]:
        event_id, _, subscriber_id = delivery_id.partition(":")
        if not subscriber_id:
            return []
        return self.activity.events([event_id], [subscriber_id])

    def lookup_event(self, event_id: str) -> list[EventStory]:
        return self.activity.events([event_id], self.subscriber_ids())

    def lookup_user(self, user_id: str) -> list[EventStory]:
        """The user's latest events (newest first) with every delivery of each."""
        return self.activity.events(self.activity.user_event_ids(user_id), self.subscriber_ids())

    def event_body(self, event_id: str) -> str | None:
        """An event's exact body (personal data): only when an operator asks for it."""
        return self.activity.event_body(event_id)
