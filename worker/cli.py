"""``reseller-webhooks``: run workers and the scheduler, publish events, inspect and operate."""

from __future__ import annotations

import json
import logging
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click

from producers.errors import WebhooksError
from producers.publisher import Publisher
from worker.settings import WorkerSettings


def _fail(exc: WebhooksError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _read_json(source: str) -> Any:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{source} is not valid JSON: {exc}") from None


def sample_user() -> dict[str, Any]:
    text = resources.files("worker").joinpath("examples/user.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """Signed, retried, dead-lettered webhooks for reseller user events."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs full request URLs at INFO; subscriber URLs may carry tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Start a worker. Extra options pass through to ``celery worker``."""
    from worker.runtime import load_subscribers

    settings = WorkerSettings()
    try:
        config = load_subscribers(settings)
    except WebhooksError as exc:
        _fail(exc)
    click.echo(f"subscribers: {len(config.subscribers)} loaded from {settings.subscribers}")
    from worker.app import app
    from worker.app import keys as app_keys

    argv = [
        "worker",
        "--loglevel=INFO",
        "--without-mingle",  # nothing to sync at start-up; saves a second
        f"--queues={app_keys.queue},{app_keys.retry_queue}",
    ]
    if not any(a.startswith(("-n", "--hostname")) for a in ctx.args):
        argv.append(f"--hostname=webhooks-{os.getpid()}@%h")
    app.worker_main(argv=argv + list(ctx.args))


@main.command()
def scheduler() -> None:
    """Run the scheduler on its own (workers embed one unless WEBHOOKS_EMBEDDED_SCHEDULER=false)."""
    import threading

    from worker.app import app
    from worker.runtime import make_store
    from worker.scheduler import Scheduler

    settings = WorkerSettings()
    stop = threading.Event()
    try:
        Scheduler(store=make_store(settings), celery=app, settings=settings).run(stop)
    except KeyboardInterrupt:
        stop.set()


@main.command()
@click.argument("event", required=False)
@click.option("--data", "data_source", help="JSON file with the user object ('-' for stdin).")
@click.option("--batch", "batch_source", help="JSON array of {event, data} ('-' for stdin).")
@click.option("--sample", is_flag=True, help="Use a built-in sample user as the data.")
def publish(
    event: str | None, data_source: str | None, batch_source: str | None, sample: bool
) -> None:
    """Validate and enqueue events; prints one event id per line."""
    try:
        with Publisher(WorkerSettings()) as publisher:
            if batch_source:
                if event or data_source or sample:
                    raise click.UsageError("--batch takes no EVENT, --data or --sample")
                items = _read_json(batch_source)
                if not isinstance(items, list):
                    raise click.BadParameter("the batch file must hold a JSON array")
                ids = publisher.publish_batch(items)
            else:
                if not event or (data_source is None) == (not sample):
                    raise click.UsageError("give EVENT and exactly one of --data or --sample")
                data = sample_user() if sample else _read_json(data_source or "-")
                ids = [publisher.publish(event, data)]
    except WebhooksError as exc:
        _fail(exc)
    for event_id in ids:
        click.echo(event_id)


@main.group()
def subscribers() -> None:
    """Inspect the subscribers file and subscriber state."""


@subscribers.command("check")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path))
def subscribers_check(path: Path | None) -> None:
    """Validate the subscribers file and print it as a table (never the secrets)."""
    from worker.delivery import redact_url
    from worker.subscribers import load_config

    target = path or WorkerSettings().subscribers
    if target is None:
        raise click.UsageError("give --file or set WEBHOOKS_SUBSCRIBERS")
    try:
        config = load_config(target)
    except WebhooksError as exc:
        _fail(exc)
    rows = [("ID", "URL", "EVENTS", "ENABLED", "TIMEOUT", "SECRET", "ATTEMPTS")]
    for s in config.subscribers:
        secret = f"env {s.secret_env}" if s.secret_env else "inline"
        if s.previous_secret or s.previous_secret_env:
            secret += " (+previous)"
        rows.append(
            (
                s.id,
                redact_url(str(s.url)),
                ",".join(s.events),
                "yes" if s.enabled else "no",
                f"{s.timeout_s:g}s",
                secret,
                str(config.policy(s).max_attempts),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    click.echo(
        f"{len(config.subscribers)} subscriber(s); private networks "
        f"{'allowed' if config.allow_private_networks else 'refused'}"
    )


@main.command()
@click.option("--redis-port", default=6399, show_default=True, help="Port of the embedded Redis.")
@click.option("--receiver-port", default=8090, show_default=True)
@click.option("--flower-port", default=5555, show_default=True)
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
def dev(redis_port: int, receiver_port: int, flower_port: int, no_flower: bool) -> None:
    """Run everything locally: Redis (embedded unless REDIS_URL is set), a worker, Flower and a
    sample receiver that verifies signatures. Ctrl-C stops it all."""
    from worker.dev import run_dev

    run_dev(
        redis_port=redis_port,
        receiver_port=receiver_port,
        flower_port=None if no_flower else flower_port,
    )
