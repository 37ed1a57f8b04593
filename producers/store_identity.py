"""Which store this is, and whether it stepped back: a Redis that lost its data is noticed.

The store carries an identity, ``id`` in ``{prefix}:store`` (written once, by whichever process
first finds none), and the count of events ever published, ``published`` in ``{prefix}:tally``
(kept by the publish and the transitions). A process remembers, in memory, the id it first saw
and the highest count it had read before its last look (so the writes of the last second, which
a failover may lose before a replica has them, never count as a step back: a publish that waits
for its replica, ``WEBHOOKS_PUBLISH_REPLICAS``, has returned none of them). Finding no id (Redis
came back empty: no AOF, a ``FLUSHALL``), another id (a different store), or a count below the
highest seen (a failover to a replica that missed writes, a restore from an old snapshot) means
deliveries and events may have been lost: the process refuses to carry on silently until an
operator accepts the reset (``reseller-webhooks store accept-reset``), which gives the store a
new id and names the one it replaces, so every process that knew the old one adopts the new one
and resumes.

A process that notices writes ``stale:{the id it knew}`` (what it found, as text) into the store
hash, so the operator's command can say what it accepts; accepting rotates the id and lists the
ones it replaces in ``accepted_reset_of``, so only processes that refused adopt the new one (a
later step back of the new store is noticed again).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis

from reseller_webhooks.producers.wire import Keys

#: How a store can differ from the one a process knew.
EMPTY, REPLACED, BEHIND = "empty", "replaced", "behind"


def assess(known_id: str | None, seen: int, found_id: str | None, found: int) -> str | None:
    """What changed between the store a process knew (``known_id``, highest ``seen`` count) and
    the one it finds; None when nothing did (or when it knew none: a first look)."""
    if known_id is None:
        return None
    if found_id is None:
        return EMPTY
    if found_id != known_id:
        return REPLACED
    if found < seen:
        return BEHIND
    return None


@dataclass(frozen=True, slots=True)
class StoreChange:
    kind: str
    known_id: str
    found_id: str
    seen: int
    found: int

    def describe(self) -> str:
        what = {
            EMPTY: "Redis has no store identity: it came back empty (restarted without"
            " persistence, flushed)",
            REPLACED: f"Redis holds another store ({self.found_id}, not {self.known_id})",
            BEHIND: f"Redis stepped back: {self.found} events published, {self.seen} seen before"
            " (a failover to a replica that missed writes, or a restore)",
        }[self.kind]
        return (
            f"{what}; deliveries and events recorded before may be lost. Check with"
            " `reseller-webhooks audit`, then acknowledge with `reseller-webhooks store"
            " accept-reset`"
        )


class StoreWatch:
    """One process's memory of its store; :meth:`check` compares it with what Redis holds."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._redis = client
        self._keys = keys
        self._clock = clock
        self._lock = threading.Lock()
        self.known_id: str | None = None
        #: The highest count read before the last check: what a step back is measured against.
        self.seen = 0
        self._last = 0
        self.change: StoreChange | None = None
        self._checked_at: float | None = None

    def check(self) -> StoreChange | None:
        """Read the store's id and count; the change found (kept until accepted), else None.
        One check at a time: a read older than another thread's verdict must not judge it."""
        with self._lock:
            return self._check()

    def _check(self) -> StoreChange | None:
        k = self._keys
        pipe = self._redis.pipeline(transaction=True)
        pipe.hmget(k.store_identity, "id", "accepted_reset_of")
        pipe.hget(k.global_tally, "published")
        ids, raw_published = pipe.execute()
        found_id = ids[0].decode() if ids[0] else None
        accepted = (ids[1] or b"").decode().split()
        found = int(raw_published or 0)
        self._checked_at = self._clock()
        if self.change is not None and self.known_id in accepted:
            self.change = None  # an operator accepted it: adopt the new store
            self.known_id, self.seen, self._last = found_id, found, found
            return None
        if self.change is not None:
            return self.change
        if self.known_id is None and found_id is None:
            found_id = self._create_id()
        kind = assess(self.known_id, self.seen, found_id, found)
        if kind is None:
            # The count read now may hold writes not yet on a replica; one check later they are.
            self.known_id, self.seen, self._last = found_id, max(self.seen, self._last), found
            return None
        self.change = StoreChange(kind, self.known_id or "", found_id or "", self.seen, found)
        self._redis.hset(k.store_identity, f"stale:{self.known_id}", self.change.describe())
        return self.change

    def check_every(self, interval_s: float) -> StoreChange | None:
        """:meth:`check`, but at most once per ``interval_s``; else the last answer."""
        if not self.due(interval_s):
            return self.change
        return self.check()

    def due(self, interval_s: float) -> bool:
        """Whether :meth:`check_every` would read Redis now."""
        last = self._checked_at
        return last is None or self._clock() - last >= interval_s

    def _create_id(self) -> str:
        key = self._keys.store_identity
        self._redis.hsetnx(key, "id", new_store_id())
        self._redis.hsetnx(key, "created_ms", int(time.time() * 1000))
        return cast(bytes, self._redis.hget(key, "id")).decode()


def new_store_id() -> str:
    return "store_" + secrets.token_hex(8)


def accept_reset(client: redis.Redis, keys: Keys) -> tuple[list[str], str]:
    """Give the store a new id, listing the ones it replaces (those processes noticed as stale,
    and the current one); returns (what the processes noticed, the new id). Processes that
    refused adopt the new id at their next check."""
    key = keys.store_identity
    fields = {
        k.decode(): v.decode() for k, v in cast(dict[bytes, bytes], client.hgetall(key)).items()
    }
    stale = [f for f in fields if f.startswith("stale:")]
    replaced = fields.get("accepted_reset_of", "").split()
    replaced += [f.removeprefix("stale:") for f in stale]
    replaced += [fields["id"]] if "id" in fields else []
    new_id = new_store_id()
    pipe = client.pipeline(transaction=True)
    pipe.hset(
        key,
        mapping={
            "id": new_id,
            "created_ms": int(time.time() * 1000),
            "accepted_reset_of": " ".join(dict.fromkeys(replaced)),
        },
    )
    if stale:
        pipe.hdel(key, *stale)
    pipe.execute()
    return [fields[f] for f in stale], new_id
