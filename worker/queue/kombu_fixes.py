"""A fix for kombu's Redis and Sentinel channels: a channel keeps its connection settings.

When Celery throws a lost broker connection away, kombu detaches the transport from it
(``transport.client = None``) while channels still have work: a task that finishes after the
reconnect acknowledges through its old channel, which rebuilds its pool from
``transport.client``, raises ``AttributeError``, and Celery stops the worker ("Unrecoverable
error"). It happened on most master failovers in ``tests/test_sentinel.py``. Here a channel
remembers the connection it was opened for, so the late acknowledgement reaches the current
master instead. ``queue.screen``'s channels, which the worker uses, include it.
"""

from __future__ import annotations

from typing import Any


class RemembersConnection:
    connection: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._opened_for = args[0].client if args else None
        super().__init__(*args, **kwargs)

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None and self._opened_for is not None:
            self.connection.client = self._opened_for  # this transport is being discarded
        return super()._connparams(asynchronous)  # type: ignore[misc]
