"""The shape of a worker's background parts: started once, stopped and joined once.

``queue.lifecycle`` starts each :class:`Component` with the worker and stops them in reverse
order; :class:`BackgroundThread` is the common case, a loop on a thread of its own that ends
when its stop event is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class Component(Protocol):
    """A part of a worker process that runs from its start to its stop."""

    @property
    def name(self) -> str: ...

    def start(self) -> None: ...

    def stop(self, timeout_s: float) -> bool:
        """Stop, waiting at most ``timeout_s``; False when it is still running."""
        ...


class BackgroundThread:
    """``body(stop)`` on a daemon thread of its own, which must return soon after ``stop`` is
    set (wait on the event rather than sleeping)."""

    def __init__(self, name: str, body: Callable[[threading.Event], None]) -> None:
        self._name = name
        self._body = body
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self._name

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._body, args=(self._stop,), name=self._name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
