"""Commands that run something until stopped: ``worker``, ``scheduler``, ``dev``, ``console``."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

import click
import redis

from reseller_webhooks.producers.errors import ConfigError, UnavailableError, WebhooksError
from reseller_webhooks.worker.cli.common import fail, worker_settings
from reseller_webhooks.worker.config.settings import WorkerSettings


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Start a worker. Extra options pass through to ``celery worker``."""
    from reseller_webhooks.producers.connection import check_redis
    from reseller_webhooks.producers.settings import redact_redis_url
    from reseller_webhooks.worker.config.subscribers import parse_yaml, read_file
    from reseller_webhooks.worker.queue.affinity import allowed_cpus, choose

    settings = worker_settings()
    try:
        if settings.subscribers is None:
            raise ConfigError(
                "WEBHOOKS_SUBSCRIBERS is not set: point it at the subscribers YAML file"
            )
        text = read_file(settings.subscribers)
        config = parse_yaml(text, source=str(settings.subscribers))
        choose(settings.cpu_affinity, allowed_cpus())  # a core it may not run on stops it here
        # A certificate that does not verify or a wrong password stops it here, before "ready";
        # an unreachable Redis is waited for.
        unreachable = check_redis(settings)
        if unreachable is None:
            _refuse_removal(settings, config.by_id, text)
    except WebhooksError as exc:
        fail(exc)
    click.echo(f"subscribers: {len(config.subscribers)} loaded from {settings.subscribers}")
    from reseller_webhooks.worker.queue import visibility

    longest = max((s.timeout_s for s in config.subscribers), default=0.0)
    too_short = visibility.visibility_warning(settings.visibility_timeout_s, longest)
    if too_short:
        logging.getLogger(visibility.__name__).warning("%s", too_short)
    click.echo(f"redis: {redact_redis_url(settings.redis_url)}")
    if unreachable:
        click.echo(
            f"redis: not reachable yet ({unreachable}); the worker keeps trying; the"
            " subscribers file was not compared with the records (a file cut short is not"
            " caught at this start)",
            err=True,
        )
    from reseller_webhooks.worker.queue.app import app
    from reseller_webhooks.worker.queue.app import keys as app_keys

    argv = [
        "worker",
        "--loglevel=INFO",
        "--without-mingle",  # nothing to sync at start-up; saves a second
        f"--queues={app_keys.queue},{app_keys.retry_queue}",
    ]
    if not any(a.startswith(("-n", "--hostname")) for a in ctx.args):
        argv.append(f"--hostname=webhooks-{os.getpid()}@%h")
    sys.exit(_run_celery(app, argv + list(ctx.args)))


def _refuse_removal(settings: WorkerSettings, kept: Iterable[str], text: str) -> None:
    """A file that would remove every subscriber the records know, or one with unfinished
    work, stops the worker here, as a reload would be refused (``config.removal``)."""
    from reseller_webhooks.worker.config import removal
    from reseller_webhooks.worker.delivery.runtime import make_store

    store = make_store(settings)
    try:
        found = removal.at_start(
            store.redis, store.keys, kept, text, source=str(settings.subscribers)
        )
    except redis.RedisError as exc:
        raise UnavailableError.from_exception(exc) from None
    finally:
        store.redis.close()
    if found.refused:
        logging.getLogger(removal.__name__).warning(
            "removal confirmed by an operator: %s", found.describe()
        )


def _run_celery(app: Any, argv: list[str]) -> int:
    """``app.worker_main(argv)``, but returning the exit code, which Celery's ``app.start`` drops:
    a worker stopped by an unrecoverable error must exit non-zero so a supervisor restarts it."""
    from celery.bin.celery import celery as command

    command.params[0].default = app  # what app.start() does
    try:
        return int(command.main(args=argv, standalone_mode=False) or 0)
    finally:
        command.params[0].default = None


@click.command()
def scheduler() -> None:
    """Run the scheduler on its own (workers embed one unless WEBHOOKS_EMBEDDED_SCHEDULER=false)."""
    import threading

    from reseller_webhooks.producers.publisher import celery_client
    from reseller_webhooks.worker.delivery.runtime import make_store
    from reseller_webhooks.worker.queue.scheduler import Scheduler

    settings = worker_settings()
    stop = threading.Event()
    try:
        store = make_store(settings)
    except ConfigError as exc:
        fail(exc)
    try:
        Scheduler(store=store, celery=celery_client(settings), settings=settings).run(stop)
    except KeyboardInterrupt:
        stop.set()


@click.command()
@click.option("--redis-port", default=6399, show_default=True, help="Port of the embedded Redis.")
@click.option("--receiver-port", default=8090, show_default=True)
@click.option("--flower-port", default=5555, show_default=True)
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
@click.option("--console-port", default=5556, show_default=True)
@click.option("--no-console", is_flag=True, help="Do not start the operator console.")
@click.option(
    "--metrics-port", default=9464, show_default=True, help="The worker's /metrics (0: none)."
)
@click.option("--api-port", default=8088, show_default=True, help="The ingest API (no token).")
@click.option("--no-api", is_flag=True, help="Do not start the ingest API.")
def dev(
    redis_port: int,
    receiver_port: int,
    flower_port: int,
    no_flower: bool,
    console_port: int,
    no_console: bool,
    metrics_port: int,
    api_port: int,
    no_api: bool,
) -> None:
    """Run everything locally, on loopback: Redis (embedded unless REDIS_URL is set), a worker
    and its metrics, Flower, the operator console (no login), the ingest API (no token; it
    publishes .dev/sample-event.json with the curl dev prints) and a sample receiver with two
    subscribers, one failing on purpose (dev's own subscribers file unless WEBHOOKS_SUBSCRIBERS
    names one). Writes .dev/env: `source .dev/env` points the CLI at it. Ctrl-C stops it all."""
    from reseller_webhooks.worker.devserver.stack import run_dev

    try:
        run_dev(
            redis_port=redis_port,
            receiver_port=receiver_port,
            flower_port=None if no_flower else flower_port,
            console_port=None if no_console else console_port,
            metrics_port=metrics_port or None,
            api_port=None if no_api else api_port,
        )
    except ConfigError as exc:
        fail(exc)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=5556, show_default=True, type=click.IntRange(0, 65535), help="0: any free."
)
@click.option("--read-only", is_flag=True, help="No actions: pages only (POSTs are refused).")
def console(host: str, port: int, read_only: bool) -> None:
    """Serve the operator console: subscriber health, the story of any delivery, dead letters
    (replay, purge). Needs WEBHOOKS_CONSOLE_USER and WEBHOOKS_CONSOLE_PASSWORD (or
    WEBHOOKS_CONSOLE_TOKEN) except on a loopback address."""
    from reseller_webhooks.worker.console.app import serve

    settings = worker_settings()
    try:
        serve(settings, host=host, port=port, read_only=read_only)
    except ConfigError as exc:
        fail(exc)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8088, show_default=True, type=click.IntRange(0, 65535), help="0: any free."
)
def api(host: str, port: int) -> None:
    """Serve the HTTP ingest API: POST /v1/events and /v1/events/batch publish as Publisher
    does. Needs WEBHOOKS_API_TOKENS (name:token[,name:token...]) except on a loopback address."""
    from reseller_webhooks.worker.api.app import serve

    settings = worker_settings()
    try:
        serve(settings, host=host, port=port)
    except ConfigError as exc:
        fail(exc)
