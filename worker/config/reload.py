"""Subscribers reloaded without a restart: a watcher thread in every worker.

Every ``WEBHOOKS_SUBSCRIBERS_WATCH_S`` (1 s) the watcher looks at the file's size and times and at
the counter ``reseller-webhooks subscribers reload`` increments; when either moved it reads the
file twice ``WEBHOOKS_SUBSCRIBERS_SETTLE_S`` apart (a file still changing waits for the next
look) and compares its hash. A new text is validated exactly as at start (the message
``subscribers check`` prints): a valid one is swapped in for the tasks that start from then on
(tasks in flight finish with what they started with, see ``Deliverer.reconfigure``); a broken one
is logged at ERROR, counted, and the running configuration stays. A subscriber removed from the
file has its waiting retries made due at once, so the deliver path dead-letters them (and its
ready work) with the reason ``subscriber removed from the subscribers file``; a file that would
remove every subscriber, or one with unfinished deliveries, is therefore refused like a broken
one before anything changes, unless an operator confirmed that text (``config.removal``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from reseller_webhooks.producers.errors import ConfigError, WebhooksError
from reseller_webhooks.worker.background import BackgroundThread
from reseller_webhooks.worker.config import removal as removals
from reseller_webhooks.worker.config.removal import Removal, assess, digest
from reseller_webhooks.worker.config.subscribers import SubscribersConfig, parse_yaml, read_file
from reseller_webhooks.worker.delivery.runtime import Runtime, make_sender
from reseller_webhooks.worker.errors import SubscriberRemovalError

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int, int] | None


@dataclass(frozen=True, slots=True)
class Change:
    """Subscriber ids a new subscribers file adds, removes and changes, each sorted."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        parts = [
            f"{name} {', '.join(ids)}"
            for name, ids in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if ids
        ]
        return "; ".join(parts) or "settings changed"


def compare(old: SubscribersConfig, new: SubscribersConfig) -> Change:
    """What differs between two subscribers files, by subscriber id."""
    before, after = old.by_id, new.by_id
    return Change(
        added=tuple(sorted(set(after) - set(before))),
        removed=tuple(sorted(set(before) - set(after))),
        changed=tuple(sorted(i for i in set(before) & set(after) if before[i] != after[i])),
    )


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


class Watcher:
    """Watches one subscribers file; ``apply(new)`` is called with each valid change.

    ``current`` returns the configuration running now (compared with a new file, so rewriting
    the same content changes nothing); ``signal`` returns the reload counter (None: not set).
    A changed file is read twice ``settle_s`` apart (``pause`` waits) and taken only when both
    reads agree. ``pending`` counts the unfinished deliveries of the given subscriber ids and
    ``confirmed`` says whether an operator allowed the file text with the given digest to remove
    work (``config.removal``): without it a file removing every subscriber, or one with
    unfinished deliveries, is refused like a broken one.
    """

    def __init__(
        self,
        path: Path,
        *,
        current: Callable[[], SubscribersConfig],
        apply: Callable[[SubscribersConfig], Change],
        signal: Callable[[], bytes | None] = lambda: None,
        pending: Callable[[Collection[str]], Mapping[str, int]] = lambda _ids: {},
        confirmed: Callable[[str], bool] = lambda _digest: False,
        settle_s: float = 0.0,
        pause: Callable[[float], object] = time.sleep,
    ) -> None:
        self.path = path
        self._current = current
        self._apply = apply
        self._signal = signal
        self._pending = pending
        self._confirmed = confirmed
        self._settle_s = settle_s
        self._pause = pause
        self._seen: tuple[Stamp, bytes | None] | None = None
        #: The file text's digest and the reload counter last decided on.
        self._version: tuple[str, bytes | None] | None = None
        #: Valid changes applied and files refused since the process started.
        self.reloads = 0
        self.refused = 0

    def check(self) -> str:
        """Look once: 'unchanged', 'unsettled' (still being written), 'reloaded' or 'refused'."""
        signal = self._signal()
        seen = (_stamp(self.path), signal)
        if seen == self._seen:
            return "unchanged"
        try:
            text = self._settled_text()
        except ConfigError as exc:
            self._seen = seen
            return self._refuse(exc)
        if text is None:
            log.debug("subscribers file still changing; looking again")
            return "unsettled"
        self._seen = seen
        version = (digest(text), signal)
        if version == self._version:
            return "unchanged"
        self._version = version
        try:
            return self._take(text, version[0])
        except Exception:
            self._seen = self._version = None  # nothing decided: try again at the next look
            raise

    def _settled_text(self) -> str | None:
        """The file's text when two reads ``settle_s`` apart agree, else None."""
        first = read_file(self.path)
        if self._settle_s <= 0:
            return first
        self._pause(self._settle_s)
        return first if read_file(self.path) == first else None

    def _take(self, text: str, text_digest: str) -> str:
        try:
            config = parse_yaml(text, source=str(self.path))
            running = self._current()
            if config == running:
                return "unchanged"
            removal = self._removal(running, config, text_digest)
        except (ConfigError, SubscriberRemovalError) as exc:
            return self._refuse(exc)
        change = self._apply(config)
        self.reloads += 1
        if removal.refused:
            log.warning("removal confirmed by an operator: %s", removal.describe())
        log.warning(
            "subscribers file reloaded: %d subscriber(s); %s",
            len(config.subscribers),
            change.describe(),
        )
        return "reloaded"

    def _removal(
        self, running: SubscribersConfig, config: SubscribersConfig, text_digest: str
    ) -> Removal:
        """What ``config`` removes; raises when that is refused and not confirmed."""
        gone = set(running.by_id) - set(config.by_id)
        removal = assess(running.by_id, config.by_id, self._pending(gone) if gone else {})
        if removal.refused and not self._confirmed(text_digest):
            raise removal.error(str(self.path))
        return removal

    def _refuse(self, exc: WebhooksError) -> str:
        self.refused += 1
        log.error("subscribers file refused, the running configuration stays: %s", exc)
        return "refused"

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Look now (the first look records the file; nothing applied if it matches), then
        every ``interval_s`` until ``stop`` is set."""
        while True:
            try:
                self.check()
            except Exception:  # a Redis hiccup reading the signal: look again next time
                log.exception("subscribers file check failed; trying again")
            if stop.wait(interval_s):
                return


def reload_runtime(rt: Runtime, config: SubscribersConfig) -> Change:
    """Swap ``config`` into the worker's runtime and reach the removed subscribers' retries."""
    change = compare(rt.config, config)
    rt.deliverer.reconfigure(config, make_sender(rt.settings, config))
    for sub_id in change.removed:
        moved = rt.store.expedite(sub_id)
        if moved:
            log.warning(
                "subscriber %s removed: %d waiting retry(ies) made due to be dead-lettered",
                sub_id,
                moved,
            )
    return change


#: This process's watcher once started (its ``reloads`` and ``refused`` counters, for metrics).
active: Watcher | None = None


def watch(rt: Runtime) -> BackgroundThread | None:
    """The watcher of the worker's subscribers file, to start (None when watching is off)."""
    global active
    path, interval_s = rt.settings.subscribers, rt.settings.subscribers_watch_s
    if path is None or interval_s <= 0:
        return None
    client, key = rt.store.redis, rt.keys.subscribers_reload

    def signal() -> bytes | None:
        value = client.get(key)
        return value if isinstance(value, bytes) else None

    watcher = Watcher(
        path,
        current=lambda: rt.config,
        apply=lambda config: reload_runtime(rt, config),
        signal=signal,
        pending=lambda ids: removals.open_counts(client, rt.keys, ids),
        confirmed=lambda text_digest: removals.confirmed(client, rt.keys, text_digest),
        settle_s=rt.settings.subscribers_settle_s,
    )
    active = watcher
    return BackgroundThread("webhooks-subscribers", lambda stop: watcher.run(stop, interval_s))
