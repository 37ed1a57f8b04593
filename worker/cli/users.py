"""``reseller-webhooks users``: erase one user's data at their request."""

from __future__ import annotations

import logging

import click

from reseller_webhooks.worker.cli.common import operations

log = logging.getLogger(__name__)


@click.group()
def users() -> None:
    """The data kept about one reseller user."""


@users.command("forget")
@click.argument("user_id")
@click.option("--operator", required=True, help="Who erases it (logged; the user's id is not).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def users_forget(user_id: str, operator: str, yes: bool) -> None:
    """Erase USER_ID's data: event bodies, dead letters, response excerpts in attempt logs and
    the console's index; the user's undelivered deliveries are cancelled (counted `erased`).
    Ids, times and outcomes stay, so `reseller-webhooks audit` still balances."""
    from reseller_webhooks.worker.records.erasure import Erasure

    ops = operations()
    erasure = Erasure(ops.store)
    found = erasure.event_ids(user_id)
    question = (
        f"erase the bodies of {len(found)} event(s) of this user, their dead letters and"
        " response excerpts, and cancel their undelivered deliveries?"
    )
    if not yes and not click.confirm(question, default=False):
        raise click.Abort
    done = erasure.forget(user_id, ops.subscriber_ids())
    log.warning(
        "user data erased by %s: %d event(s), %d delivery(ies) cancelled, %d dead letter(s),"
        " %d attempt log(s) cleaned",
        operator,
        done.events,
        done.cancelled,
        done.dead_letters,
        done.attempt_logs,
    )
    click.echo(
        f"erased: {done.events} event body(ies), {done.cancelled} undelivered delivery(ies)"
        f" cancelled, {done.dead_letters} dead letter(s), {done.attempt_logs} attempt log(s)"
        " cleaned"
    )
