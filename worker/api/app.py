"""The ingest API's Tornado application and ``reseller-webhooks api``."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import click
import redis
import tornado.httpserver
import tornado.netutil
import tornado.web
from kombu.exceptions import OperationalError

from reseller_webhooks.producers.errors import ConfigError, UnavailableError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.worker.api.handlers import (
    Health,
    Ingest,
    Metrics,
    NotFound,
    OpenAPI,
    Publish,
)
from reseller_webhooks.worker.api.tokens import Producers, parse_tokens
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.console.auth import is_loopback

log = logging.getLogger("reseller_webhooks.worker.api")

#: Threads that make the Redis round trips (the event loop parses and validates).
POOL_THREADS = 8
#: How long a kept-alive connection may sit idle, or a request's headers take to arrive.
IDLE_S = 60.0


def openapi_document() -> bytes:
    return resources.files(__name__.rpartition(".")[0]).joinpath("openapi.yaml").read_bytes()


def log_request(handler: tornado.web.RequestHandler) -> None:
    """One line per request, with the producer's name (never a header's value): refusals at
    WARNING; what succeeds at DEBUG (``-v``), since a line per event costs the API a fifth of its
    CPU (``webhooks_api_requests_total`` counts them by producer)."""
    status = handler.get_status()
    producer = getattr(handler, "producer", "-")
    took_ms = 1000.0 * handler.request.request_time()
    level = logging.DEBUG if status < 400 else logging.WARNING
    log.log(
        level,
        "%d %s %s producer=%s %.1fms",
        status,
        handler.request.method,
        handler.request.path,
        producer,
        took_ms,
    )


def make_app(settings: WorkerSettings, publisher: Publisher) -> tornado.web.Application:
    ingest = Ingest(
        publisher=publisher,
        producers=parse_tokens(settings.api_tokens),
        pool=ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="api-redis"),
        max_event_bytes=settings.max_body_bytes,
        max_batch_bytes=settings.api_max_request_bytes,
        openapi=openapi_document(),
    )
    shared = {"ingest": ingest}
    return tornado.web.Application(
        [
            (r"/v1/events", Publish, {**shared, "batch": False}),
            (r"/v1/events/batch", Publish, {**shared, "batch": True}),
            (r"/healthz", Health, shared),
            (r"/openapi.yaml", OpenAPI, shared),
            (r"/metrics", Metrics, shared),
        ],
        default_handler_class=NotFound,
        default_handler_args=shared,
        log_function=log_request,
        compress_response=False,
        serve_traceback=False,
    )


def refusal(host: str, producers: Producers) -> str | None:
    """Why the API must not listen on ``host`` with these producers, or None."""
    if producers.required or is_loopback(host):
        return None
    return (
        f"the API needs producer tokens to listen on {host} (not a loopback address): set"
        " WEBHOOKS_API_TOKENS=name:token[,name:token...]"
    )


def serve(settings: WorkerSettings, *, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM; ``ConfigError`` for bad tokens, or for a non-loopback
    address without tokens."""
    producers = parse_tokens(settings.api_tokens)
    problem = refusal(host, producers)
    if problem:
        raise ConfigError(problem)
    if not producers.required:
        log.warning("api: no WEBHOOKS_API_TOKENS: no token needed, loopback only")
    try:
        sockets = tornado.netutil.bind_sockets(port, host)
    except OSError as exc:
        raise ConfigError(
            f"the API cannot listen on {host}:{port}: {exc.strerror or type(exc).__name__}"
        ) from None
    publisher = Publisher(settings)
    try:
        publisher.ping()  # the first publish then costs what the others do
    except (UnavailableError, OperationalError, redis.RedisError) as exc:
        reason = exc if isinstance(exc, UnavailableError) else UnavailableError.from_exception(exc)
        log.warning("api: %s; requests answer 503 until it answers", reason)
    names = ", ".join(name for name, _ in producers.tokens) or "local"
    try:
        asyncio.run(_run(make_app(settings, publisher), settings, sockets, host, names))
    finally:
        publisher.close()


async def _run(
    app: tornado.web.Application,
    settings: WorkerSettings,
    sockets: list[socket.socket],
    host: str,
    names: str,
) -> None:
    server = tornado.httpserver.HTTPServer(
        app,
        xheaders=False,
        body_timeout=settings.api_body_timeout_s,
        idle_connection_timeout=IDLE_S,
        max_body_size=1 << 40,  # a backstop: each handler sets its own limit first
    )
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    port = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"api on http://{shown}:{port} (producers: {names})")
    await stop.wait()
    server.stop()
    await server.close_all_connections()
    click.echo("api stopped")
