"""The API's HTTP/1.1 connections: uvicorn's httptools protocol with two deadlines it lacks.

A request's line and headers must arrive within ``header_s`` of its first byte (or of the
connection, for its first request), and its body within ``body_s`` of its headers; past either,
the connection is closed without an answer. The application then reads a disconnect and records
nothing (``handlers.Disconnected``). Between requests uvicorn's own keep-alive timeout applies.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class DeadlineProtocol(HttpToolsProtocol):
    header_s: float = 60.0
    body_s: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm(self.header_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def deadline_protocol(header_s: float, body_s: float) -> type[DeadlineProtocol]:
    """The protocol class a server's connections are made of, with these deadlines."""
    return type("ApiProtocol", (DeadlineProtocol,), {"header_s": header_s, "body_s": body_s})
