"""``reseller-webhooks subscribers``: check and reload the subscribers file, read and change a
subscriber's runtime state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import redis

from reseller_webhooks.producers.errors import ConfigError, UnavailableError
from reseller_webhooks.worker.cli.common import operations, store_and_settings, worker_settings
from reseller_webhooks.worker.records.store import DISABLED_BY_OPERATOR

if TYPE_CHECKING:
    from reseller_webhooks.worker.config.removal import Removal
    from reseller_webhooks.worker.config.subscribers import SubscribersConfig

#: Said when a secret variable is missing where the command runs (e.g. a shell beside `dev`).
SECRETS_HINT = (
    "; set the variable here (for dev: source .dev/env), or check everything else with"
    " --without-secrets"
)


@contextmanager
def secrets_hint(resolve_secrets: bool) -> Iterator[None]:
    """A missing secret variable's error also says how to check the file without it."""
    try:
        yield
    except ConfigError as exc:
        if resolve_secrets and "environment variable" in str(exc) and "is not set" in str(exc):
            raise ConfigError(f"{exc}{SECRETS_HINT}") from None
        raise


@click.group()
def subscribers() -> None:
    """Inspect the subscribers file and subscriber state."""


@subscribers.command("check")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--without-secrets",
    is_flag=True,
    help="Do not read the secret_env variables (check a file where they are not set).",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Validate the file alone, without comparing it with the deployment's records in Redis"
    " (which refuses a file that would remove every subscriber or unfinished work).",
)
def subscribers_check(path: Path | None, without_secrets: bool, offline: bool) -> None:
    """Validate the subscribers file, refuse it as a reload would (removing every subscriber,
    or one with unfinished deliveries), and print it as a table (never the secrets)."""
    from reseller_webhooks.worker.config.subscribers import load_config

    target = path or worker_settings().subscribers
    if target is None:
        raise click.UsageError("give --file or set WEBHOOKS_SUBSCRIBERS")
    with secrets_hint(not without_secrets):
        config = load_config(target, resolve_secrets=not without_secrets)
    if not offline:
        try:
            removal = _against_records(config)
        except redis.RedisError as exc:
            raise UnavailableError(
                f"{type(exc).__name__}; --offline checks the file without Redis"
            ) from None
        if removal.refused:
            raise removal.error(str(target))
    rows = [("ID", "URL", "EVENTS", "ENABLED", "TIMEOUT", "SECRET", "ATTEMPTS")]
    for s in config.subscribers:
        secret = f"env {s.secret_env}" if s.secret_env else "inline"
        if s.previous_secret or s.previous_secret_env:
            secret += " (+previous)"
        if s.signing != "hmac":
            secret += f", {s.signing}"
        rows.append(
            (
                s.id,
                s.shown_url,
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


@subscribers.command("disable")
@click.argument("subscriber_id")
@click.option("--reason", default=DISABLED_BY_OPERATOR, show_default=True)
def subscribers_disable(subscriber_id: str, reason: str) -> None:
    """Stop deliveries to a subscriber; pending ones are dead-lettered with the reason."""
    operations().disable(subscriber_id, reason)
    click.echo(f"{subscriber_id}: disabled ({reason})")


@subscribers.command("enable")
@click.argument("subscriber_id")
def subscribers_enable(subscriber_id: str) -> None:
    """Resume deliveries to a subscriber disabled by an operator, a 410 or persistent failure."""
    operations().enable(subscriber_id)
    click.echo(f"{subscriber_id}: enabled")


@subscribers.command("reload")
@click.option(
    "--without-secrets",
    is_flag=True,
    help="Do not read the secret_env variables here (workers still do, and refuse a file whose"
    " variables they lack).",
)
@click.option(
    "--allow-removal",
    is_flag=True,
    help="Confirm that this file may remove every subscriber or subscribers with unfinished"
    " deliveries (their work is dead-lettered); stands for this exact file text only.",
)
def subscribers_reload(without_secrets: bool, allow_removal: bool) -> None:
    """Check the subscribers file, then tell every worker to read it now (workers also notice a
    changed file on their own within seconds). A broken file, or one that would remove every
    subscriber or unfinished work without --allow-removal, is refused here and signals
    nothing."""
    from reseller_webhooks.worker.config import removal as removals
    from reseller_webhooks.worker.config.subscribers import parse_yaml, read_file

    store, settings = store_and_settings()
    if settings.subscribers is None:
        raise click.UsageError("set WEBHOOKS_SUBSCRIBERS")
    text = read_file(settings.subscribers)
    with secrets_hint(not without_secrets):
        config = parse_yaml(
            text, source=str(settings.subscribers), resolve_secrets=not without_secrets
        )
    removal = _against_records(config, store)
    if removal.refused and not allow_removal:
        raise removal.error(str(settings.subscribers))
    if allow_removal:
        removals.confirm(store.redis, store.keys, removals.digest(text))
    store.redis.incr(store.keys.subscribers_reload)
    if removal.refused:
        click.echo(f"removal allowed: {removal.describe()}")
    click.echo(f"{len(config.subscribers)} subscriber(s) checked; workers told to reload")


def _against_records(config: SubscribersConfig, store: Any = None) -> Removal:
    """What ``config`` would remove, compared with the subscribers the records know."""
    from reseller_webhooks.worker.config.removal import against_records

    if store is None:
        store, _ = store_and_settings()
    return against_records(store.redis, store.keys, config.by_id)


@subscribers.command("status")
def subscribers_status() -> None:
    """Runtime state of every configured subscriber (enabled, disabled and why)."""
    for health in operations().health(with_numbers=False):
        click.echo(f"{health.subscriber_id}  {health.describe()}")
