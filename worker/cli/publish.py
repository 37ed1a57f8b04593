"""``reseller-webhooks publish``: the one command the light producer install runs."""

from __future__ import annotations

import click

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.worker.cli.common import read_json, refuse, worker_settings
from reseller_webhooks.worker.devserver.samples import sample_user


@click.command()
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
        items = read_json(batch_source, "--batch")
        if not isinstance(items, list):
            refuse("--batch: the file must hold a JSON array of {event, data} objects")
    else:
        if not event or (data_source is None) == (not sample):
            raise click.UsageError("give EVENT and exactly one of --data or --sample")
        data = sample_user() if sample else read_json(data_source or "-", "--data")
    with Publisher(worker_settings()) as publisher:
        if batch_source:
            ids = publisher.publish_batch(items)
        else:
            ids = [publisher.publish(event or "", data, idempotency_key=idempotency_key)]
    for event_id in ids:
        click.echo(event_id)
