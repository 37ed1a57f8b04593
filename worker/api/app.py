"""The ingest API's server and ``reseller-webhooks api``: the ASGI application of
``handlers.py`` served by uvicorn (httptools parsing, the uvloop event loop where installed),
whose connections keep the header and body deadlines of ``protocol.py``."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import click
import redis
import tornado.netutil
import uvicorn
from kombu.exceptions import OperationalError

from reseller_webhooks.producers.errors import ConfigError, UnavailableError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.worker.api.commit import Committer
from reseller_webhooks.worker.api.handlers import Api, Ingest
from reseller_webhooks.worker.api.protocol import deadline_protocol
from reseller_webhooks.worker.api.tokens import Producers, parse_tokens
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.console.auth import is_loopback

log = logging.getLogger("reseller_webhooks.worker.api")

#: Threads for what blocks (the health check, the store check, the dispatch trigger).
POOL_THREADS = 8
#: How long a kept-alive connection may sit idle, or a request's headers take to arrive.
IDLE_S = 60.0
#: How long requests under way at a stop may take to be answered.
STOP_GRACE_S = 10.0


def openapi_document() -> bytes:
    return resources.files(__name__.rpartition(".")[0]).joinpath("openapi.yaml").read_bytes()


def make_app(settings: WorkerSettings, publisher: Publisher) -> Api:
    pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="api-redis")
    return Api(
        Ingest(
            publisher=publisher,
            committer=Committer(publisher, pool),
            producers=parse_tokens(settings.api_tokens),
            max_event_bytes=settings.max_body_bytes,
            max_batch_bytes=settings.api_max_request_bytes,
            openapi=openapi_document(),
        )
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
    app = make_app(settings, publisher)
    try:
        _event_loop_run(_run(app, settings, sockets, host, names))
    finally:
        publisher.close()


def _stopped(signum: int, frame: Any) -> None:
    """What a stop signal does once the server has stopped: nothing more."""


def _event_loop_run(main: Coroutine[Any, Any, None]) -> None:
    """``main`` on uvloop where it is installed (a third less CPU per request than asyncio's
    own loop, measured), else on asyncio's."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover (a platform without uvloop)
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


async def _run(
    app: Api,
    settings: WorkerSettings,
    sockets: list[socket.socket],
    host: str,
    names: str,
) -> None:
    config = uvicorn.Config(
        app,
        http=deadline_protocol(IDLE_S, settings.api_body_timeout_s),
        lifespan="off",
        proxy_headers=False,  # a forwarded client address is never used
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=True,
        timeout_keep_alive=int(IDLE_S),
        timeout_graceful_shutdown=int(STOP_GRACE_S),
    )
    server = uvicorn.Server(config)
    port = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"api on http://{shown}:{port} (producers: {names})")  # listening already
    # The server stops on SIGINT or SIGTERM, then sends that signal again to the handler it
    # found: this one, so that the process goes on to close the publisher.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    await server.serve(sockets=sockets)
    await app.close()
    click.echo("api stopped")
