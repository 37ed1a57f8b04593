"""``reseller-webhooks store``: the store's identity; accept a reset Redis came back with."""

from __future__ import annotations

import logging
from typing import cast

import click

from reseller_webhooks.worker.cli.common import store_and_settings

log = logging.getLogger(__name__)


@click.group()
def store() -> None:
    """The identity of the Redis store, and acknowledging that it was reset."""


@store.command("status")
def store_status() -> None:
    """The store's id and any reset a process noticed and refuses to work over."""
    records, _ = store_and_settings()
    fields = cast(dict[bytes, bytes], records.redis.hgetall(records.keys.store_identity))
    shown = {k.decode(): v.decode() for k, v in fields.items()}
    click.echo(f"id: {shown.get('id', '(none yet)')}")
    stale = [v for k, v in shown.items() if k.startswith("stale:")]
    for text in stale:
        click.echo(f"NOTICED: {text}")
    if not stale:
        click.echo("no reset noticed")


@store.command("accept-reset")
@click.option("--operator", required=True, help="Who accepts it (logged).")
def store_accept_reset(operator: str) -> None:
    """Acknowledge that Redis came back empty or behind: the store gets a new id and the
    workers, schedulers and publishers that stopped resume. Run `reseller-webhooks audit` first
    to see what is unaccounted for."""
    from reseller_webhooks.producers.store_identity import accept_reset

    records, _ = store_and_settings()
    noticed, new_id = accept_reset(records.redis, records.keys)
    for text in noticed:
        click.echo(f"accepted: {text}")
    log.warning("store reset accepted by %s: new store id %s", operator, new_id)
    click.echo(f"store id is now {new_id}; stopped processes resume within seconds")
