"""A log line per burst, not per happening: the first of a burst is logged at once, what follows
within ``quiet_s`` is counted and logged in one line when the next one comes after that."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class BurstLog:
    """``add(n)`` logs ``message % count`` at WARNING at most once per ``quiet_s``."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        *,
        quiet_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._message = message
        self._quiet_s = quiet_s
        self._clock = clock
        self._held = 0
        self._last: float | None = None
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            now = self._clock()
            self._held += n
            if self._last is not None and now - self._last < self._quiet_s:
                return
            count, self._held, self._last = self._held, 0, now
        self._log.warning(self._message, count)
