"""``reseller-webhooks``: run workers and the scheduler, publish events, inspect and operate."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import redis
from kombu.exceptions import OperationalError

from reseller_webhooks.producers.errors import ConfigError, UnavailableError, WebhooksError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.worker.config.settings import WorkerSettings, load_settings
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.records.store import DISABLED_BY_OPERATOR

if TYPE_CHECKING:
    from reseller_webhooks.worker.ops.actions import Operations


def _fail(exc: WebhooksError) -> NoReturn:
    """One line on stderr; exit 3 when Redis is unavailable (try again later), else 2."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(3 if isinstance(exc, UnavailableError) else 2)


def _refuse(message: str) -> NoReturn:
    """Bad input on the command line: one line on stderr, exit 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


class _Commands(click.Group):
    """Every command's project errors and Redis failures become one line on stderr, never a
    traceback; the Redis client's own message is left out (it may name the URL)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WebhooksError as exc:
            _fail(exc)
        except (redis.RedisError, OperationalError) as exc:
            _fail(UnavailableError.from_exception(exc))


def _settings() -> WorkerSettings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(exc)


def _read_json(source: str, option: str) -> Any:
    """The JSON document in file ``source`` ('-': stdin); bad input ends the command in one line."""
    where = f"{option} {'stdin' if source == '-' else source}"
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        _refuse(f"{where}: cannot read: {exc.strerror or type(exc).__name__}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        _refuse(f"{where}: not UTF-8 text (byte {exc.start})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _refuse(f"{where}: not valid JSON: {exc}")
    except RecursionError:
        _refuse(f"{where}: not valid JSON here: nested too deeply")


@click.group(cls=_Commands)
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
    from reseller_webhooks.producers.connection import check_redis
    from reseller_webhooks.producers.settings import redact_redis_url
    from reseller_webhooks.worker.delivery.runtime import load_subscribers
    from reseller_webhooks.worker.queue.affinity import allowed_cpus, choose

    settings = _settings()
    try:
        config = load_subscribers(settings)
        choose(settings.cpu_affinity, allowed_cpus())  # a core it may not run on stops it here
        # A certificate that does not verify or a wrong password stops it here, before "ready";
        # an unreachable Redis is waited for.
        unreachable = check_redis(settings)
    except WebhooksError as exc:
        _fail(exc)
    click.echo(f"subscribers: {len(config.subscribers)} loaded from {settings.subscribers}")
    from reseller_webhooks.worker.queue import visibility

    longest = max((s.timeout_s for s in config.subscribers), default=0.0)
    too_short = visibility.visibility_warning(settings.visibility_timeout_s, longest)
    if too_short:
        logging.getLogger(visibility.__name__).warning("%s", too_short)
    click.echo(f"redis: {redact_redis_url(settings.redis_url)}")
    if unreachable:
        click.echo(f"redis: not reachable yet ({unreachable}); the worker keeps trying", err=True)
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


def _run_celery(app: Any, argv: list[str]) -> int:
    """``app.worker_main(argv)``, but returning the exit code, which Celery's ``app.start`` drops:
    a worker stopped by an unrecoverable error must exit non-zero so a supervisor restarts it."""
    from celery.bin.celery import celery as command

    command.params[0].default = app  # what app.start() does
    try:
        return int(command.main(args=argv, standalone_mode=False) or 0)
    finally:
        command.params[0].default = None


@main.command()
def scheduler() -> None:
    """Run the scheduler on its own (workers embed one unless WEBHOOKS_EMBEDDED_SCHEDULER=false)."""
    import threading

    from reseller_webhooks.producers.publisher import celery_client
    from reseller_webhooks.worker.delivery.runtime import make_store
    from reseller_webhooks.worker.queue.scheduler import Scheduler

    settings = _settings()
    stop = threading.Event()
    try:
        store = make_store(settings)
    except ConfigError as exc:
        _fail(exc)
    try:
        Scheduler(store=store, celery=celery_client(settings), settings=settings).run(stop)
    except KeyboardInterrupt:
        stop.set()


@main.command()
@click.argument("event", required=False)
@click.option("--data", "data_source", help="JSON file with the user object ('-' for stdin).")
@click.option("--batch", "batch_source", help="JSON array of {event, data} ('-' for stdin).")
@click.option("--sample", is_flag=True, help="Use a built-in sample user as the data.")
@click.option(
    "--idempotency-key",
    help="Publishing again with this key returns the first event's id and sends nothing new.",
)
def publish(
    event: str | None,
    data_source: str | None,
    batch_source: str | None,
    sample: bool,
    idempotency_key: str | None,
) -> None:
    """Validate and enqueue events; prints one event id per line."""
    if batch_source:
        if event or data_source or sample or idempotency_key:
            raise click.UsageError("--batch takes no EVENT, --data, --sample or --idempotency-key")
        items = _read_json(batch_source, "--batch")
        if not isinstance(items, list):
            _refuse("--batch: the file must hold a JSON array of {event, data} objects")
    else:
        if not event or (data_source is None) == (not sample):
            raise click.UsageError("give EVENT and exactly one of --data or --sample")
        data = sample_user() if sample else _read_json(data_source or "-", "--data")
    with Publisher(_settings()) as publisher:
        if batch_source:
            ids = publisher.publish_batch(items)
        else:
            ids = [publisher.publish(event or "", data, idempotency_key=idempotency_key)]
    for event_id in ids:
        click.echo(event_id)


@main.group()
def subscribers() -> None:
    """Inspect the subscribers file and subscriber state."""


@subscribers.command("check")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--without-secrets",
    is_flag=True,
    help="Do not read the secret_env variables (check a file where they are not set).",
)
def subscribers_check(path: Path | None, without_secrets: bool) -> None:
    """Validate the subscribers file and print it as a table (never the secrets)."""
    from reseller_webhooks.worker.config.subscribers import load_config, redact_url

    target = path or _settings().subscribers
    if target is None:
        raise click.UsageError("give --file or set WEBHOOKS_SUBSCRIBERS")
    config = load_config(target, resolve_secrets=not without_secrets)
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
@click.option("--console-port", default=5556, show_default=True)
@click.option("--no-console", is_flag=True, help="Do not start the operator console.")
def dev(
    redis_port: int,
    receiver_port: int,
    flower_port: int,
    no_flower: bool,
    console_port: int,
    no_console: bool,
) -> None:
    """Run everything locally: Redis (embedded unless REDIS_URL is set), a worker, Flower, the
    operator console (loopback, no login) and a sample receiver that verifies signatures.
    Ctrl-C stops it all."""
    from reseller_webhooks.worker.devserver.stack import run_dev

    try:
        run_dev(
            redis_port=redis_port,
            receiver_port=receiver_port,
            flower_port=None if no_flower else flower_port,
            console_port=None if no_console else console_port,
        )
    except ConfigError as exc:
        _fail(exc)


@main.command()
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

    settings = _settings()
    try:
        serve(settings, host=host, port=port, read_only=read_only)
    except ConfigError as exc:
        _fail(exc)


def _store_and_settings() -> tuple[Any, WorkerSettings]:
    from reseller_webhooks.worker.delivery.runtime import make_store

    settings = _settings()
    try:
        return make_store(settings), settings
    except ConfigError as exc:
        _fail(exc)


def _operations() -> Operations:
    from reseller_webhooks.worker.ops.actions import Operations

    store, settings = _store_and_settings()
    return Operations(settings, store)


def _parse_since(value: str | None) -> int | None:
    """``--since``: an RFC 3339 time, or a duration back from now like ``90m``, ``2h``, ``3d``."""
    from reseller_webhooks.worker.ops.actions import parse_since

    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


@main.group()
def dlq() -> None:
    """Dead letters: deliveries that gave up, with their whole story."""


@dlq.command("list")
@click.option("--subscriber", help="Only this subscriber id.")
@click.option("--event", "event_type", help="Only this event type.")
@click.option("--since", help="RFC 3339 time or a duration back from now (90m, 2h, 3d).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dlq_list(
    subscriber: str | None, event_type: str | None, since: str | None, as_json: bool
) -> None:
    letters = _operations().dead_letters(
        subscriber=subscriber, event_type=event_type, since_ms=_parse_since(since)
    )
    count = 0
    for letter in letters:
        count += 1
        if as_json:
            click.echo(json.dumps(letter.summary(), sort_keys=True))
        else:
            d = letter.data
            click.echo(
                f"{letter.delivery_id}  {d.get('event_type', '?')}  {d.get('dead_at', '?')}  "
                f"attempts={d.get('attempts', '?')}  {d.get('reason', '')}"
            )
    if not as_json:
        click.echo(f"{count} dead letter(s)")


@dlq.command("show")
@click.argument("delivery_id")
@click.option("--body", is_flag=True, help="Include the event body (personal data).")
def dlq_show(delivery_id: str, body: bool) -> None:
    """A dead letter with every attempt."""
    ops = _operations()
    letter = ops.dead_letter(delivery_id)
    if letter is None:
        click.echo(f"error: no dead letter {delivery_id!r}", err=True)
        sys.exit(1)
    shown = letter.data if body else letter.summary()
    click.echo(json.dumps({**shown, "attempt_log": ops.attempts(delivery_id)}, indent=2))


@dlq.command("replay")
@click.argument("delivery_ids", nargs=-1)
@click.option("--subscriber", help="Replay every dead letter of this subscriber.")
@click.option("--since", help="Replay every dead letter since this time or duration.")
def dlq_replay(delivery_ids: tuple[str, ...], subscriber: str | None, since: str | None) -> None:
    """Send dead deliveries again: same webhook-id, fresh schedule, logged as manual."""
    from reseller_webhooks.producers.publisher import celery_client
    from reseller_webhooks.worker.errors import SubscribersDisabledError
    from reseller_webhooks.worker.queue.triggers import send_deliver

    if not delivery_ids and not subscriber and not since:
        raise click.UsageError("give delivery ids, --subscriber or --since")
    ops = _operations()
    if delivery_ids:
        wanted = list(delivery_ids)
    else:
        found = ops.dead_letters(subscriber=subscriber, since_ms=_parse_since(since))
        wanted = [d.delivery_id for d in found]
    try:
        sender = celery_client(ops.settings)
        done = ops.replay(wanted, lambda triggers: send_deliver(sender, ops.store.keys, triggers))
    except SubscribersDisabledError as exc:
        click.echo(
            f"error: {exc}; run `reseller-webhooks subscribers enable ID` first",
            err=True,
        )
        sys.exit(1)
    for did in done.missing:
        click.echo(f"not found: {did}", err=True)
    click.echo(f"replayed {len(done.replayed)} delivery(ies)")
    if done.missing:
        sys.exit(1)


@dlq.command("purge")
@click.argument("delivery_ids", nargs=-1)
@click.option("--subscriber", help="Purge every dead letter of this subscriber.")
@click.option("--all", "purge_all", is_flag=True, help="Purge every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(
    delivery_ids: tuple[str, ...], subscriber: str | None, purge_all: bool, yes: bool
) -> None:
    """Delete dead letters for good."""
    if not delivery_ids and not subscriber and not purge_all:
        raise click.UsageError("give delivery ids, --subscriber or --all")
    ops = _operations()
    if delivery_ids:
        wanted = list(delivery_ids)
    else:
        wanted = [d.delivery_id for d in ops.dead_letters(subscriber=subscriber)]
    if not yes and not click.confirm(f"purge {len(wanted)} dead letter(s)?", default=False):
        sys.exit(1)
    click.echo(f"purged {ops.purge(wanted)} dead letter(s)")


@dlq.command("messages")
def dlq_messages() -> None:
    """Queue messages that were not valid triggers (malformed, unknown task), newest first."""
    store, _ = _store_and_settings()
    for record in store.bad_messages():
        click.echo(json.dumps(record, sort_keys=True))


@subscribers.command("disable")
@click.argument("subscriber_id")
@click.option("--reason", default=DISABLED_BY_OPERATOR, show_default=True)
def subscribers_disable(subscriber_id: str, reason: str) -> None:
    """Stop deliveries to a subscriber; pending ones are dead-lettered with the reason."""
    _operations().disable(subscriber_id, reason)
    click.echo(f"{subscriber_id}: disabled ({reason})")


@subscribers.command("enable")
@click.argument("subscriber_id")
def subscribers_enable(subscriber_id: str) -> None:
    """Resume deliveries to a subscriber disabled by an operator, a 410 or persistent failure."""
    _operations().enable(subscriber_id)
    click.echo(f"{subscriber_id}: enabled")


@subscribers.command("reload")
@click.option(
    "--without-secrets",
    is_flag=True,
    help="Do not read the secret_env variables here (workers still do, and refuse a file whose"
    " variables they lack).",
)
def subscribers_reload(without_secrets: bool) -> None:
    """Check the subscribers file, then tell every worker to read it now (workers also notice a
    changed file on their own within seconds). A broken file is refused here and signals
    nothing."""
    from reseller_webhooks.worker.config.subscribers import load_config

    store, settings = _store_and_settings()
    if settings.subscribers is None:
        raise click.UsageError("set WEBHOOKS_SUBSCRIBERS")
    config = load_config(settings.subscribers, resolve_secrets=not without_secrets)
    store.redis.incr(store.keys.subscribers_reload)
    click.echo(f"{len(config.subscribers)} subscriber(s) checked; workers told to reload")


@subscribers.command("status")
def subscribers_status() -> None:
    """Runtime state of every configured subscriber (enabled, disabled and why)."""
    for health in _operations().health(with_numbers=False):
        click.echo(f"{health.subscriber_id}  {health.describe()}")
