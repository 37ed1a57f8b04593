"""``reseller-webhooks subscribers``: check and reload the subscribers file, read and change a
subscriber's runtime state."""

from __future__ import annotations

from pathlib import Path

import click

from reseller_webhooks.worker.cli.common import operations, store_and_settings, worker_settings
from reseller_webhooks.worker.records.store import DISABLED_BY_OPERATOR


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
def subscribers_check(path: Path | None, without_secrets: bool) -> None:
    """Validate the subscribers file and print it as a table (never the secrets)."""
    from reseller_webhooks.worker.config.subscribers import load_config

    target = path or worker_settings().subscribers
    if target is None:
        raise click.UsageError("give --file or set WEBHOOKS_SUBSCRIBERS")
    config = load_config(target, resolve_secrets=not without_secrets)
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
def subscribers_reload(without_secrets: bool) -> None:
    """Check the subscribers file, then tell every worker to read it now (workers also notice a
    changed file on their own within seconds). A broken file is refused here and signals
    nothing."""
    from reseller_webhooks.worker.config.subscribers import load_config

    store, settings = store_and_settings()
    if settings.subscribers is None:
        raise click.UsageError("set WEBHOOKS_SUBSCRIBERS")
    config = load_config(settings.subscribers, resolve_secrets=not without_secrets)
    store.redis.incr(store.keys.subscribers_reload)
    click.echo(f"{len(config.subscribers)} subscriber(s) checked; workers told to reload")


@subscribers.command("status")
def subscribers_status() -> None:
    """Runtime state of every configured subscriber (enabled, disabled and why)."""
    for health in operations().health(with_numbers=False):
        click.echo(f"{health.subscriber_id}  {health.describe()}")
