"""What every command shares: how it fails (one line on stderr, an exit code), its settings and
store, and how it reads JSON input and a ``--since`` option."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from reseller_webhooks.producers.errors import ConfigError, UnavailableError, WebhooksError
from reseller_webhooks.worker.config.settings import WorkerSettings, load_settings

if TYPE_CHECKING:
    from reseller_webhooks.worker.ops.actions import Operations


def fail(exc: WebhooksError) -> NoReturn:
    """One line on stderr; exit 3 when Redis is unavailable (try again later), else 2."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(3 if isinstance(exc, UnavailableError) else 2)


def refuse(message: str) -> NoReturn:
    """Bad input on the command line: one line on stderr, exit 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def worker_settings() -> WorkerSettings:
    """The worker settings, or the command ends on the configuration error."""
    try:
        return load_settings()
    except ConfigError as exc:
        fail(exc)


def read_json(source: str, option: str) -> Any:
    """The JSON document in file ``source`` ('-': stdin); bad input ends the command in one line."""
    where = f"{option} {'stdin' if source == '-' else source}"
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        refuse(f"{where}: cannot read: {exc.strerror or type(exc).__name__}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        refuse(f"{where}: not UTF-8 text (byte {exc.start})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        refuse(f"{where}: not valid JSON: {exc}")
    except RecursionError:
        refuse(f"{where}: not valid JSON here: nested too deeply")


def store_and_settings() -> tuple[Any, WorkerSettings]:
    """The delivery store and the settings it was made from."""
    from reseller_webhooks.worker.delivery.runtime import make_store

    settings = worker_settings()
    try:
        return make_store(settings), settings
    except ConfigError as exc:
        fail(exc)


def operations() -> Operations:
    """What an operator can read and do (``ops.actions``), on the configured store."""
    from reseller_webhooks.worker.ops.actions import Operations

    store, settings = store_and_settings()
    return Operations(settings, store)


def parse_since(value: str | None) -> int | None:
    """``--since``: an RFC 3339 time, or a duration back from now like ``90m``, ``2h``, ``3d``."""
    from reseller_webhooks.worker.ops.actions import parse_since as parse

    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
