"""Subscribers reloaded without a restart: a watcher thread in every worker.

Every ``WEBHOOKS_SUBSCRIBERS_WATCH_S`` (1 s) the watcher looks at the file's size and times and at
the counter ``reseller-webhooks subscribers reload`` increments; when either moved it reads the
file and compares its hash. A new text is validated exactly as at start (the message
``subscribers check`` prints): a valid one is swapped in for the tasks that start from then on
(tasks in flight finish with what they started with, see ``Deliverer.reconfigure``); a broken one
is logged at ERROR, counted, and the running configuration stays. A subscriber removed from the
file has its waiting retries made due at once, so the deliver path dead-letters them (and its
ready work) with the reason ``subscriber removed from the subscribers file``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.worker.background import BackgroundThread
from reseller_webhooks.worker.config.subscribers import SubscribersConfig, parse_yaml, read_file
from reseller_webhooks.worker.delivery.runtime import Runtime, make_sender

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
    """

    def __init__(
        self,
        path: Path,
        *,
        current: Callable[[], SubscribersConfig],
        apply: Callable[[SubscribersConfig], Change],
        signal: Callable[[], bytes | None] = lambda: None,
    ) -> None:
        self.path = path
        self._current = current
        self._apply = apply
        self._signal = signal
        self._seen: tuple[Stamp, bytes | None] | None = None
        self._digest: str | None = None
        #: Valid changes applied and broken files refused since the process started.
        self.reloads = 0
        self.refused = 0

    def check(self) -> str:
        """Look once: 'unchanged', 'reloaded' or 'refused'."""
        seen = (_stamp(self.path), self._signal())
        if seen == self._seen:
            return "unchanged"
        self._seen = seen
        try:
            text = read_file(self.path)
        except ConfigError as exc:
            return self._refuse(exc)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._digest:
            return "unchanged"
        self._digest = digest
        try:
            config = parse_yaml(text, source=str(self.path))
        except ConfigError as exc:
            return self._refuse(exc)
        if config == self._current():
            return "unchanged"
        try:
            change = self._apply(config)
        except Exception:
            self._seen = self._digest = None  # not applied: try again at the next look
            raise
        self.reloads += 1
        log.warning(
            "subscribers file reloaded: %d subscriber(s); %s",
            len(config.subscribers),
            change.describe(),
        )
        return "reloaded"

    def _refuse(self, exc: ConfigError) -> str:
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
    )
    active = watcher
    return BackgroundThread("webhooks-subscribers", lambda stop: watcher.run(stop, interval_s))
