"""The console's Tornado application and ``reseller-webhooks console``."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import tornado.httpserver
import tornado.netutil
import tornado.web

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.console.auth import credentials, refusal
from reseller_webhooks.worker.console.guard import guard
from reseller_webhooks.worker.console.handlers import SESSION_DAYS, Console, NotFound
from reseller_webhooks.worker.console.jobs import Jobs
from reseller_webhooks.worker.console.routes import routes
from reseller_webhooks.worker.console.sessions import Sessions
from reseller_webhooks.worker.console.throttle import Throttle
from reseller_webhooks.worker.ops.actions import Operations
from reseller_webhooks.worker.records.shapes import Trigger

log = logging.getLogger("reseller_webhooks.worker.console")

#: The package folder itself (an editable install links each file: Tornado serves only files
#: whose real path is under the static folder).
HERE = Path(__file__).resolve().parent


def _celery_sender(settings: WorkerSettings) -> Callable[[Sequence[Trigger]], None]:
    """Sends deliver triggers by name, without importing the worker's Celery app."""
    from reseller_webhooks.producers.publisher import celery_client
    from reseller_webhooks.producers.wire import Keys
    from reseller_webhooks.worker.queue.triggers import send_deliver

    sender, keys = celery_client(settings), Keys(settings.key_prefix)
    return lambda triggers: send_deliver(sender, keys, triggers)


def make_app(
    settings: WorkerSettings,
    *,
    read_only: bool = False,
    ops: Operations | None = None,
    send_factory: Callable[[], Callable[[Sequence[Trigger]], None]] | None = None,
    listen_host: str | None = None,
) -> tornado.web.Application:
    """The console for the deployment ``settings`` describe (``ConfigError`` when its login
    settings are incomplete or too weak)."""
    ops = ops or Operations(settings)
    send_factory = send_factory or functools.partial(_celery_sender, settings)
    console = Console(
        ops=ops,
        credentials=credentials(settings),
        sessions=Sessions(ops.store.redis, ops.store.keys, ttl_s=SESSION_DAYS * 86400),
        read_only=read_only or settings.console_read_only,
        send_factory=send_factory,
        jobs=Jobs(ops.store.redis, ops.store.keys),
        guard=guard(settings, listen_host),
        throttle=Throttle(ops.store.redis, ops.store.keys, base_s=settings.console_login_delay_s),
    )
    secret = settings.console_cookie_secret
    return tornado.web.Application(
        routes(console),
        console=console,
        template_path=str(HERE / "templates"),
        static_path=str(HERE / "static"),
        cookie_secret=secret.get_secret_value() if secret else secrets.token_hex(32),
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict"},
        login_url="/login",
        default_handler_class=NotFound,
        default_handler_args={"console": console},
        autoescape="xhtml_escape",
        compress_response=False,
        serve_traceback=False,
    )


def serve(settings: WorkerSettings, *, host: str, port: int, read_only: bool = False) -> None:
    """Serve the console until SIGINT or SIGTERM. Refuses (``ConfigError``) to listen beyond
    loopback without a login."""
    app = make_app(settings, read_only=read_only, listen_host=host)
    creds = credentials(settings)
    problem = refusal(host, creds)
    if problem:
        raise ConfigError(problem)
    if not creds.required:
        log.warning(
            "console: no WEBHOOKS_CONSOLE_PASSWORD or WEBHOOKS_CONSOLE_TOKEN: no login, anyone"
            " on this machine can use it (loopback only)"
        )
    try:
        sockets = tornado.netutil.bind_sockets(port, host)
    except OSError as exc:
        raise ConfigError(
            f"the console cannot listen on {host}:{port}: {exc.strerror or type(exc).__name__}"
        ) from None
    bound = sockets[0].getsockname()[1]
    asyncio.run(_run(app, sockets, host, bound, read_only or settings.console_read_only))


async def _run(
    app: tornado.web.Application,
    sockets: list[socket.socket],
    host: str,
    port: int,
    read_only: bool,
) -> None:
    server = tornado.httpserver.HTTPServer(app, xheaders=False)
    server.add_sockets(sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shown = f"[{host}]" if ":" in host else host
    mode = " (read-only)" if read_only else ""
    click.echo(f"console on http://{shown}:{port}{mode}", err=False)
    await stop.wait()
    server.stop()
    await asyncio.to_thread(app.settings["console"].jobs.stop)
    click.echo("console stopped")
