"""``reseller-webhooks audit``: does every event and every delivery add up (``ops.audit``)?"""

from __future__ import annotations

import json
import sys

import click

from reseller_webhooks.worker.cli.common import store_and_settings


@click.command("audit")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def audit(as_json: bool) -> None:
    """Balance every subscriber's deliveries and the events published; exit 1 when something
    is unaccounted for (named: subscriber, how many, which delivery ids)."""
    from reseller_webhooks.worker.ops.audit import audit as run_audit

    store, settings = store_and_settings()
    configured: list[str] = []
    if settings.subscribers is not None:
        from reseller_webhooks.worker.config.subscribers import load_config

        configured = [
            s.id for s in load_config(settings.subscribers, resolve_secrets=False).subscribers
        ]
    report = run_audit(
        store, dead_ttl_s=settings.dead_letter_retention_s, subscriber_ids=configured
    )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.balanced:
        sys.exit(1)
