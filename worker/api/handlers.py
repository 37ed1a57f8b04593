"""The API's request handlers: publishing (one event, a batch), health, the OpenAPI document and
metrics. Publishing requests are streamed so that the size limit holds before anything is
parsed: a declared length over it is refused at the headers, a chunked body as it arrives."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
import tornado.web

from reseller_webhooks.producers.errors import UnavailableError, WebhooksError
from reseller_webhooks.producers.events import WebhookEvent
from reseller_webhooks.producers.publisher import Publisher, validate_batch, validate_item
from reseller_webhooks.worker.api import metrics
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


@dataclass(frozen=True)
class Ingest:
    """What every handler shares."""

    publisher: Publisher
    producers: Producers
    pool: ThreadPoolExecutor
    max_event_bytes: int
    max_batch_bytes: int
    openapi: bytes

    async def run(self, call: Callable[[], Any]) -> Any:
        """``call`` on the pool: a slow or unreachable Redis never blocks the event loop (the
        health check and the refusals keep answering)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)


class Refused(Exception):
    def __init__(self, refusal: Problem) -> None:
        super().__init__(refusal.kind)
        self.problem = refusal


#: The body a request that publishes nothing may carry (bodies are read only by ``Publish``).
OTHER_BODY_BYTES = 1024


@tornado.web.stream_request_body
class Base(tornado.web.RequestHandler):
    """Every handler streams its request body, so that each sets its own limit before a byte
    is read (the server's own limit is only a backstop)."""

    ingest: Ingest
    producer: str = ANONYMOUS

    def initialize(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def prepare(self) -> None:
        self.request.connection.set_max_body_size(OTHER_BODY_BYTES)  # type: ignore[union-attr]

    def data_received(self, chunk: bytes) -> None:
        """Dropped: only publishing reads a body."""

    def send_problem(self, refusal: Problem) -> None:
        self.clear_header("Content-Type")
        self.set_status(refusal.status)
        self.set_header("Content-Type", MEDIA_TYPE)
        if refusal.status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="reseller-webhooks"')
        if refusal.status == 503:
            self.set_header("Retry-After", str(RETRY_AFTER_S))
        self.finish(json.dumps(refusal.to_dict()))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(status_code, "internal")
        self.send_problem(Problem(kind, self._reason))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Never the request's headers (a token): the route and the exception's type."""
        if not isinstance(value, tornado.web.HTTPError):
            log.error("api: %s %s failed: %s", self.request.method, self.request.path, typ)


class NotFound(Base):
    """Any other path, whatever the method. The 404 is raised once the request has been read:
    one answered while it was still being read would close a kept-alive connection."""

    def _not_found(self, *args: Any) -> None:
        raise tornado.web.HTTPError(404)

    get = head = post = put = patch = delete = options = _not_found


class Publish(Base):
    """``POST /v1/events`` (``batch=False``) and ``POST /v1/events/batch``."""

    batch: bool

    def initialize(self, ingest: Ingest, batch: bool = False) -> None:
        self.ingest, self.batch = ingest, batch
        self.started = time.perf_counter()
        self.chunks: list[bytes] = []
        self.size = 0
        self.authenticated = False
        self.limit = ingest.max_batch_bytes if batch else ingest.max_event_bytes

    def prepare(self) -> None:
        """Identify the producer; refuse at once a declared length over the limit (the body is
        never read); else read up to the limit (refusals of smaller bodies come after it, so a
        kept-alive connection stays usable)."""
        producer = self.ingest.producers.identify(self.request.headers.get("Authorization"))
        self.authenticated = producer is not None
        self.producer = producer or ANONYMOUS
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.limit:
            self.send_problem(
                self.unauthorized() if producer is None else self.too_large(int(declared))
            )
            return
        self.request.connection.set_max_body_size(self.limit * CHUNKED_SLACK)  # type: ignore[union-attr]

    @staticmethod
    def unauthorized() -> Problem:
        return problem("unauthorized", "Authorization: must be Bearer and a producer's token")

    def too_large(self, declared: int | None = None) -> Problem:
        setting = "WEBHOOKS_API_MAX_REQUEST_BYTES" if self.batch else "WEBHOOKS_MAX_BODY_BYTES"
        size = f"{declared} bytes, " if declared is not None else ""
        return problem("too-large", f"body: {size}over the limit of {self.limit} bytes ({setting})")

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= self.limit and self.authenticated:
            self.chunks.append(chunk)
        else:
            self.chunks.clear()

    async def post(self) -> None:
        try:
            ids = await self.publish()
        except Refused as refused:
            self.send_problem(refused.problem)
            return
        self.set_status(202)
        self.finish({"ids": ids} if self.batch else {"id": ids[0]})

    async def publish(self) -> list[str]:
        if not self.authenticated:
            raise Refused(self.unauthorized())
        if self.size > self.limit:
            raise Refused(self.too_large())
        body = parse_json(b"".join(self.chunks))
        key = idempotency_key(self.request.headers.get_list(HEADER))
        events = self.validate(body)
        keys = None
        if key is not None:
            keys = batch_keys(key, len(events)) if self.batch else [key]
        try:
            ids: list[str] = await self.ingest.run(
                lambda: self.ingest.publisher.publish_events(events, idempotency_keys=keys)
            )
        except WebhooksError as exc:
            refusal = from_error(exc)
            if refusal.kind == "internal":  # an operator's fault, e.g. a wrong Redis password
                log.error("api: producer=%s: publishing failed: %s", self.producer, exc)
            raise Refused(refusal) from None
        except redis.RedisError as exc:  # what the publisher does not translate itself
            raise Refused(from_error(UnavailableError.from_exception(exc))) from None
        return ids

    def validate(self, body: Any) -> Sequence[WebhookEvent]:
        try:
            if self.batch:
                if not isinstance(body, list):
                    raise Refused(problem("invalid-event", "body: must be a JSON array"))
                return validate_batch(body, max_body_bytes=self.ingest.max_event_bytes)
            return [validate_item(body, max_body_bytes=self.ingest.max_event_bytes)]
        except WebhooksError as exc:
            raise Refused(from_error(exc)) from None

    def on_finish(self) -> None:
        status = self.get_status()
        seconds = time.perf_counter() - self.started
        metrics.observe(self.producer, status, seconds if status != 401 else None)


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


class Health(Base):
    """``GET /healthz``: 200 while Redis answers, else 503 (for compose and load balancers)."""

    async def get(self) -> None:
        try:
            await self.ingest.run(self.ingest.publisher.ping_redis)
        except WebhooksError as exc:
            self.send_problem(from_error(exc))
            return
        self.finish({"status": "ok"})


class OpenAPI(Base):
    def get(self) -> None:
        self.set_header("Content-Type", "application/yaml")
        self.finish(self.ingest.openapi)


class Metrics(Base):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(metrics.exposition())
