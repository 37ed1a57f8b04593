"""The API's request handlers: publishing (one event, a batch), health, the OpenAPI document and
metrics. Publishing requests are streamed so that the size limit holds before anything is
parsed: a declared length over it is refused at the headers, a chunked body as it arrives."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from reseller_webhooks.producers.errors import UnavailableError, WebhooksError
from reseller_webhooks.producers.events import WebhookEvent
from reseller_webhooks.producers.publisher import Publisher, validate_batch, validate_item
from reseller_webhooks.worker.api import metrics
from reseller_webhooks.worker.api.commit import Committer
from reseller_webhooks.worker.api.idempotency import HEADER, batch_keys, header_problem
from reseller_webhooks.worker.api.problems import (
    MEDIA_TYPE,
    RETRY_AFTER_S,
    Problem,
    from_error,
    problem,
)
from reseller_webhooks.worker.api.tokens import Producers

log = logging.getLogger("reseller_webhooks.worker.api")

#: A chunked body is read (and dropped) up to this many times the limit before the connection
#: is cut: enough to answer 413 to an honest client, bounded for a hostile one.
CHUNKED_SLACK = 4
#: Who an unauthenticated request is counted under (not a valid producer name).
ANONYMOUS = "(none)"
#: The body a request that publishes nothing may carry.
OTHER_BODY_BYTES = 1024
JSON_TYPE = b"application/json; charset=UTF-8"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Ingest:
    """What every request shares."""

    publisher: Publisher
    committer: Committer
    producers: Producers
    max_event_bytes: int
    max_batch_bytes: int
    openapi: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: bytes = JSON_TYPE
    headers: tuple[tuple[bytes, bytes], ...] = ()
    #: Close the connection after it: the rest of the request body is not read.
    close: bool = False

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", self.content_type),
            (b"content-length", str(len(self.body)).encode()),
            *self.headers,
        ]
        if self.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def refusal_answer(refusal: Problem, *, close: bool = False) -> Answer:
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if refusal.status == 401:
        headers = ((b"www-authenticate", b'Bearer realm="reseller-webhooks"'),)
    elif refusal.status == 503:
        headers = ((b"retry-after", str(RETRY_AFTER_S).encode()),)
    body = json.dumps(refusal.to_dict()).encode()
    return Answer(refusal.status, body, MEDIA_TYPE.encode(), headers, close)


def json_answer(status: int, value: Any) -> Answer:
    return Answer(status, json.dumps(value, separators=(",", ":")).encode())


class Refused(Exception):
    def __init__(self, refusal: Problem, *, close: bool = False) -> None:
        super().__init__(refusal.kind)
        self.problem, self.close = refusal, close


class Disconnected(Exception):
    """The client went away, or the server cut a request that took too long."""


class Request:
    """One request: its method, path, headers (names lowercased) and a bounded body reader."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.receive = receive
        self.producer = ANONYMOUS

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def header_list(self, name: bytes) -> list[str]:
        return [v.decode("latin-1").strip() for k, v in self.headers if k == name]

    async def body(self, limit: int, *, keep: bool = True) -> tuple[bytes, int]:
        """The body (empty unless ``keep``, or when over ``limit``) and its size;
        ``Refused(too-large)`` past ``limit * CHUNKED_SLACK`` bytes (read no further)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                raise Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit and keep:
                chunks.append(chunk)
            else:
                chunks.clear()
            if size > limit * CHUNKED_SLACK:
                raise Refused(too_large(limit, None), close=True)
            if not message.get("more_body", False):
                return b"".join(chunks), size


def too_large(limit: int, declared: int | None, *, batch: bool = False) -> Problem:
    setting = "WEBHOOKS_API_MAX_REQUEST_BYTES" if batch else "WEBHOOKS_MAX_BODY_BYTES"
    size = f"{declared} bytes, " if declared is not None else ""
    return problem("too-large", f"body: {size}over the limit of {limit} bytes ({setting})")


def unauthorized() -> Problem:
    return problem("unauthorized", "Authorization: must be Bearer and a producer's token")


class Publishing:
    """``POST /v1/events`` (``batch=False``) and ``POST /v1/events/batch``."""

    def __init__(self, ingest: Ingest, *, batch: bool) -> None:
        self.ingest, self.batch = ingest, batch
        self.limit = ingest.max_batch_bytes if batch else ingest.max_event_bytes

    async def answer(self, request: Request) -> Answer:
        """Identify the producer; refuse at once a declared length over the limit (the body is
        never read); else read up to the limit (refusals of smaller bodies come after it, so a
        kept-alive connection stays usable)."""
        producer = self.ingest.producers.identify(request.header(b"authorization"))
        request.producer = producer or ANONYMOUS
        declared = request.header(b"content-length") or ""
        if declared.isdigit() and int(declared) > self.limit:
            refused = unauthorized() if producer is None else self.too_large(int(declared))
            raise Refused(refused, close=True)
        body, size = await request.body(self.limit, keep=producer is not None)
        if producer is None:
            raise Refused(unauthorized())
        if size > self.limit:
            raise Refused(self.too_large(None))
        ids = await self.publish(parse_json(body), idempotency_key(request.header_list(IDEM)))
        return json_answer(202, {"ids": ids} if self.batch else {"id": ids[0]})

    def too_large(self, declared: int | None) -> Problem:
        return too_large(self.limit, declared, batch=self.batch)

    async def publish(self, body: Any, key: str | None) -> list[str]:
        events = self.validate(body)
        keys = None
        if key is not None:
            keys = batch_keys(key, len(events)) if self.batch else [key]
        try:
            ids = await self.ingest.committer.publish_events(events, keys)
        except WebhooksError as exc:
            refusal = from_error(exc)
            if refusal.kind == "internal":  # an operator's fault, e.g. a wrong Redis password
                log.error("api: publishing failed: %s", exc)
            raise Refused(refusal) from None
        except redis.RedisError as exc:  # what the publisher does not translate itself
            raise Refused(from_error(UnavailableError.from_exception(exc))) from None
        return ids

    def validate(self, body: Any) -> Sequence[WebhookEvent]:
        limit = self.ingest.max_event_bytes
        try:
            if self.batch:
                if not isinstance(body, list):
                    raise Refused(problem("invalid-event", "body: must be a JSON array"))
                return validate_batch(body, max_body_bytes=limit)
            return [validate_item(body, max_body_bytes=limit)]
        except WebhooksError as exc:
            raise Refused(from_error(exc)) from None


IDEM = HEADER.lower().encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """The body as JSON, or a 400 naming where it breaks (never echoing the body)."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise Refused(
            problem(
                "invalid-json",
                f"body: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            )
        ) from None
    except UnicodeDecodeError:
        raise Refused(problem("invalid-json", "body: not valid UTF-8")) from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise Refused(problem("invalid-json", f"body: not valid JSON: {reason}")) from None


def idempotency_key(values: list[str]) -> str | None:
    refused = header_problem(values)
    if refused:
        raise Refused(problem("invalid-header", refused))
    return values[0] if values else None


class Routes:
    """Every path and method; any other path is a 404 (once its small body has been read, so
    that a kept-alive connection stays usable)."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.publishing = {
            "/v1/events": Publishing(ingest, batch=False),
            "/v1/events/batch": Publishing(ingest, batch=True),
        }
        self.reading: dict[str, Callable[[], Awaitable[Answer]]] = {
            "/healthz": self.health,
            "/openapi.yaml": self.openapi,
            "/metrics": self.metrics,
        }

    async def answer(self, request: Request) -> Answer:
        publishing = self.publishing.get(request.path)
        if publishing is not None and request.method == "POST":
            return await publishing.answer(request)
        _, size = await request.body(OTHER_BODY_BYTES, keep=False)
        if size > OTHER_BODY_BYTES:
            raise Refused(too_large(OTHER_BODY_BYTES, None), close=True)
        reading = self.reading.get(request.path)
        if reading is not None and request.method == "GET":
            return await reading()
        if publishing is None and reading is None:
            raise Refused(problem("not-found", "Not Found"))
        raise Refused(problem("method-not-allowed", "Method Not Allowed"))

    async def health(self) -> Answer:
        """``GET /healthz``: 200 while Redis answers, else 503 (for compose and load
        balancers)."""
        try:
            await self.ingest.committer.run(self.ingest.publisher.ping_redis)
        except WebhooksError as exc:
            raise Refused(from_error(exc)) from None
        return json_answer(200, {"status": "ok"})

    async def openapi(self) -> Answer:
        return Answer(200, self.ingest.openapi, b"application/yaml")

    async def metrics(self) -> Answer:
        return Answer(200, metrics.exposition(), b"text/plain; version=0.0.4; charset=utf-8")


class Api:
    """The ASGI application: routes a request, answers it, counts and logs it."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.routes = Routes(ingest)

    async def close(self) -> None:
        await self.ingest.committer.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        try:
            answer = await self.routes.answer(request)
        except Refused as refused:
            answer = refusal_answer(refused.problem, close=refused.close)
        except Disconnected:
            return
        except Exception as exc:  # never the request's headers (a token): the route and type
            log.error("api: %s %s failed: %s", request.method, request.path, type(exc).__name__)
            answer = refusal_answer(Problem("internal", "Internal Server Error"), close=True)
        await answer.send(send)
        seconds = time.perf_counter() - started
        if request.path in self.routes.publishing:
            took = seconds if answer.status != 401 else None
            metrics.observe(request.producer, answer.status, took)
        log_request(request, answer.status, seconds)


def log_request(request: Request, status: int, seconds: float) -> None:
    """One line per request, with the producer's name (never a header's value): refusals at
    WARNING; what succeeds at DEBUG (``-v``), since a line per event costs the API a fifth of its
    CPU (``webhooks_api_requests_total`` counts them by producer)."""
    level = logging.DEBUG if status < 400 else logging.WARNING
    if log.isEnabledFor(level):
        log.log(
            level,
            "%d %s %s producer=%s %.1fms",
            status,
            request.method,
            request.path,
            request.producer,
            1000.0 * seconds,
        )
