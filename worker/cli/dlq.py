"""``reseller-webhooks dlq``: list, show, replay and purge dead letters; bad queue messages."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import click

from reseller_webhooks.worker.cli.common import operations, parse_since, store_and_settings

if TYPE_CHECKING:
    from reseller_webhooks.worker.ops.actions import Operations
    from reseller_webhooks.worker.records.deadletters import DeadLetter, Filter
    from reseller_webhooks.worker.records.shapes import Trigger

LIST_PAGE = 500


@click.group()
def dlq() -> None:
    """Dead letters: deliveries that gave up, with their whole story."""


def newest_first(ops: Operations, chosen: Filter) -> Iterator[DeadLetter]:
    """Every dead letter the filter keeps, newest first, a page per round of reads."""
    offset: int | None = 0
    while offset is not None:
        page = ops.dead_letter_page(chosen, offset=offset, size=LIST_PAGE)
        yield from page.letters
        offset = page.next_offset


@dlq.command("list")
@click.option("--subscriber", help="Only this subscriber id.")
@click.option("--event", "event_type", help="Only this event type.")
@click.option("--since", help="RFC 3339 time or a duration back from now (90m, 2h, 3d).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dlq_list(
    subscriber: str | None, event_type: str | None, since: str | None, as_json: bool
) -> None:
    """Dead letters held, newest first (as the console lists them)."""
    ops = operations()
    chosen = ops.dead_filter(
        subscriber=subscriber, event_type=event_type, since_ms=parse_since(since)
    )
    count = 0
    for letter in newest_first(ops, chosen):
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
    ops = operations()
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
    ops = operations()
    sender = celery_client(ops.settings)

    def send(triggers: Sequence[Trigger]) -> None:
        send_deliver(sender, ops.store.keys, triggers)

    missing: list[str] = []
    try:
        if delivery_ids:
            done = ops.replay(delivery_ids, send)
            count, missing = len(done.replayed), done.missing
        else:
            chosen = ops.dead_filter(subscriber=subscriber, since_ms=parse_since(since))
            count = ops.replay_matching(chosen, send)
    except SubscribersDisabledError as exc:
        click.echo(
            f"error: {exc}; run `reseller-webhooks subscribers enable ID` first",
            err=True,
        )
        sys.exit(1)
    for did in missing:
        click.echo(f"not found: {did}", err=True)
    click.echo(f"replayed {count} delivery(ies)")
    if missing:
        sys.exit(1)


@dlq.command("purge")
@click.argument("delivery_ids", nargs=-1)
@click.option("--subscriber", help="Purge every dead letter of this subscriber.")
@click.option("--all", "purge_all", is_flag=True, help="Purge every dead letter.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(
    delivery_ids: tuple[str, ...], subscriber: str | None, purge_all: bool, yes: bool
) -> None:
    """Delete dead letters for good. Answering no purges nothing and exits 0 (nothing failed)."""
    if not delivery_ids and not subscriber and not purge_all:
        raise click.UsageError("give delivery ids, --subscriber or --all")
    ops = operations()
    if delivery_ids:
        wanted = list(delivery_ids)
        if not yes and not click.confirm(f"purge {len(wanted)} dead letter(s)?", default=False):
            click.echo("nothing purged")
            return
        click.echo(f"purged {ops.purge(wanted)} dead letter(s)")
        return
    # Those held now: what dies after the question is not purged.
    chosen = ops.dead_filter(subscriber=subscriber, until_ms=ops.server_ms())
    count = ops.dead_count(chosen)
    if not yes and not click.confirm(f"purge {count} dead letter(s)?", default=False):
        click.echo("nothing purged")
        return
    click.echo(f"purged {ops.purge_matching(chosen)} dead letter(s)")


@dlq.command("messages")
def dlq_messages() -> None:
    """Queue messages that were not valid triggers (malformed, unknown task), newest first."""
    store, _ = store_and_settings()
    records = store.bad_messages()
    for record in records:
        click.echo(json.dumps(record, sort_keys=True))
    if not records:  # on stderr: stdout stays one JSON object per line
        click.echo("no bad queue messages recorded", err=True)
