"""A small webhook receiver that verifies Standard Webhooks signatures.

``reseller-webhooks dev`` runs it as the sample subscriber, and the test suite uses it as the real
HTTP peer on loopback: it records every request and can be told how to answer each one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timed-out or killed worker) is normal here."""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float
    peer: str = ""  # the client's address: which host (or network namespace) sent it

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0


Responder = Callable[[Received], Reply]


class Receiver:
    """Threaded HTTP server on ``host:port`` (0 picks a free port) recording what arrives."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        respond: Responder | None = None,
        on_receive: Callable[[Received], None] | None = None,
    ) -> None:
        self._verifier = Webhook(secret) if secret else None
        self.respond: Responder = respond or (lambda _r: Reply())
        self.received: list[Received] = []
        self._on_receive = on_receive
        self._cond = threading.Condition()
        self._server = _QuietServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Block until at least ``count`` requests arrived (or the timeout passes)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.received) >= count, timeout=timeout_s)
            return list(self.received)

    def _verify(self, headers: dict[str, str], body: bytes) -> bool:
        if self._verifier is None:
            return False
        try:
            self._verifier.verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    def _record(self, path: str, headers: dict[str, str], body: bytes, peer: str = "") -> Reply:
        item = Received(path, headers, body, self._verify(headers, body), time.time(), peer)
        reply = self.respond(item)
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()
        if self._on_receive:
            self._on_receive(item)
        return reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = receiver._record(self.path, headers, body, str(self.client_address[0]))
                if reply.delay_s:
                    threading.Event().wait(reply.delay_s)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
