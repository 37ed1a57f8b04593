"""A new subscribers file that would drop work is refused unless an operator confirms it.

A subscriber missing from a reloaded file has its unfinished deliveries dead-lettered (see
``config.reload``). A file cut short that is still valid YAML (at a subscriber boundary, or down to
its first line) would do that silently, so a reload is refused when it would remove every
subscriber, or any subscriber with unfinished deliveries (blocked, ready, running or waiting:
the ``open`` index the transitions keep). ``assess`` is the pure decision; the rest reads what it
needs from Redis. ``subscribers reload --allow-removal`` confirms one exact file text (its
SHA-256) for a day: workers then take that text, and only that text, despite the removal.

A worker that *starts* has no running file to compare with: ``at_start`` applies the same rule
against the subscribers the records know, and accepts the same confirmation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.errors import SubscriberRemovalError

#: How long ``subscribers reload --allow-removal`` stands for the file text it confirmed.
CONFIRMATION_TTL_S = 24 * 3600

#: Most subscriber ids a refusal names (the rest are counted).
NAMED = 10

CONFIRM_HINT = (
    "if that is intended, confirm it with `reseller-webhooks subscribers reload --allow-removal`"
)


@dataclass(frozen=True, slots=True)
class Removal:
    """What a new file removes: ``removed`` ids (sorted), the unfinished deliveries of those
    that have some, and whether it keeps none of the subscribers known before."""

    removed: tuple[str, ...]
    open: Mapping[str, int] = field(default_factory=dict)
    every: bool = False

    @property
    def refused(self) -> bool:
        return self.every or bool(self.open)

    @property
    def pending(self) -> int:
        return sum(self.open.values())

    def describe(self) -> str:
        """The subscribers removed and the work they hold, for a log line or a refusal."""
        with_work = [f"{i} ({self.open[i]})" for i in sorted(self.open)]
        parts = []
        if self.every:
            parts.append(f"every subscriber ({_names(list(self.removed))})")
        if with_work:
            parts.append(
                f"subscriber(s) with {self.pending} unfinished delivery(ies): {_names(with_work)}"
            )
        return " and ".join(parts) or _names(list(self.removed))

    def error(self, source: str) -> SubscriberRemovalError:
        return SubscriberRemovalError(
            f"{source}: would remove {self.describe()}; their work would be dead-lettered;"
            f" {CONFIRM_HINT}"
        )


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:NAMED])
    return shown + (f" and {len(items) - NAMED} more" if len(items) > NAMED else "")


def assess(known: Iterable[str], kept: Iterable[str], open_counts: Mapping[str, int]) -> Removal:
    """What replacing the ``known`` subscriber ids by ``kept`` removes; ``open_counts`` holds the
    unfinished deliveries of (at least) the removed ones. Removing every known subscriber, or
    any with unfinished deliveries, is refused."""
    before, after = set(known), set(kept)
    removed = tuple(sorted(before - after))
    return Removal(
        removed=removed,
        open={i: n for i in removed if (n := open_counts.get(i, 0)) > 0},
        every=bool(before) and not (before & after),
    )


def digest(text: str) -> str:
    """What a confirmation names: the SHA-256 of the file's text."""
    return hashlib.sha256(text.encode()).hexdigest()


def open_counts(client: Any, keys: Keys, subscriber_ids: Iterable[str]) -> dict[str, int]:
    """Unfinished deliveries of each subscriber (those with none are left out)."""
    ids = sorted(subscriber_ids)
    if not ids:
        return {}
    pipe = client.pipeline(transaction=False)
    for sub_id in ids:
        pipe.zcard(keys.open_deliveries(sub_id))
    return {i: int(n) for i, n in zip(ids, pipe.execute(), strict=True) if int(n) > 0}


def recorded_subscribers(client: Any, keys: Keys) -> set[str]:
    """Subscriber ids the records know (every one that has had a delivery): what an operator
    command, which cannot see the workers' running file, compares a new file with."""
    return {
        m.decode() if isinstance(m, bytes) else str(m)
        for m in client.smembers(keys.active_subscribers)
    }


def against_records(client: Any, keys: Keys, kept: Iterable[str]) -> Removal:
    """``assess`` with the subscribers the records know in place of a running file."""
    known = recorded_subscribers(client, keys)
    return assess(known, kept, open_counts(client, keys, known - set(kept)))


def at_start(client: Any, keys: Keys, kept: Iterable[str], text: str, source: str) -> Removal:
    """What starting with the file ``text`` removes from what the records know; raises
    ``SubscriberRemovalError`` when that is refused and this exact text is not confirmed."""
    removal = against_records(client, keys, kept)
    if removal.refused and not confirmed(client, keys, digest(text)):
        raise SubscriberRemovalError(
            f"{source}: the worker will not start with this file: it would remove"
            f" {removal.describe()}; their work would be dead-lettered; {CONFIRM_HINT}"
            " (then start the worker again)"
        )
    return removal


def confirm(client: Any, keys: Keys, text_digest: str) -> None:
    """Let workers take the file text with this digest although it removes work."""
    client.set(keys.subscribers_removal_allowed, text_digest, ex=CONFIRMATION_TTL_S)


def confirmed(client: Any, keys: Keys, text_digest: str) -> bool:
    value = client.get(keys.subscribers_removal_allowed)
    return isinstance(value, bytes) and value.decode() == text_digest
