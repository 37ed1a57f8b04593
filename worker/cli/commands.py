"""``reseller-webhooks``: run workers and the scheduler, publish events, inspect and operate.

The group lives here; its commands live in one module per concern: ``run`` (worker, scheduler,
dev, console), ``publish``, ``subscribers``, ``dlq`` and ``keys``; what they share in
``common``.
"""

from __future__ import annotations

import logging
from typing import Any

import click
import redis
from kombu.exceptions import OperationalError

from reseller_webhooks.producers.errors import UnavailableError, WebhooksError
from reseller_webhooks.worker.cli.common import fail
from reseller_webhooks.worker.cli.dlq import dlq
from reseller_webhooks.worker.cli.keys import keys
from reseller_webhooks.worker.cli.publish import publish
from reseller_webhooks.worker.cli.run import console, dev, scheduler, worker
from reseller_webhooks.worker.cli.subscribers import subscribers


class _Commands(click.Group):
    """Every command's project errors and Redis failures become one line on stderr, never a
    traceback; the Redis client's own message is left out (it may name the URL)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WebhooksError as exc:
            fail(exc)
        except (redis.RedisError, OperationalError) as exc:
            fail(UnavailableError.from_exception(exc))


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


for _command in (worker, scheduler, publish, subscribers, dev, console, dlq, keys):
    main.add_command(_command)
