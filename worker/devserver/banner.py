"""What ``dev`` prints once everything is ready: where each part is, the command that publishes
a sample event, and how to point the CLI at it."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from reseller_webhooks.producers.settings import redact_redis_url


def console_script() -> Path | None:
    """The ``reseller-webhooks`` script beside this Python (a venv's ``bin/``), if installed."""
    script = Path(sys.executable).parent / "reseller-webhooks"
    return script if script.exists() else None


def publish_hint(redis_url: str | None, script: Path | None, cwd: Path) -> str:
    """The command that publishes a sample event, runnable as printed from ``cwd`` in a second
    terminal (no venv activated): the script by path, relative when under ``cwd``.
    ``redis_url`` is ``None`` when it holds a password (the command then relies on REDIS_URL)."""
    if script is None:
        command = f"{shlex.quote(sys.executable)} -m reseller_webhooks.worker"
    elif script.is_relative_to(cwd):
        relative = str(script.relative_to(cwd))
        command = shlex.quote(relative if "/" in relative else f"./{relative}")
    else:
        command = shlex.quote(str(script))
    prefix = f"REDIS_URL={shlex.quote(redis_url)} " if redis_url else ""
    return f"{prefix}{command} publish reseller.user.created --sample"


def curl_hint(api_port: int, sample_event: Path, cwd: Path) -> str:
    """The ``curl`` that publishes ``sample_event`` through dev's ingest API (on loopback, so
    without a token), runnable as printed from ``cwd``."""
    return (
        "curl -sS -H 'Content-Type: application/json'"
        f" --data-binary @{shlex.quote(_shown(sample_event, cwd))}"
        f" http://127.0.0.1:{api_port}/v1/events"
    )


def _shown(path: Path, cwd: Path) -> str:
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def _service_lines(ports: Mapping[str, int | None]) -> list[str]:
    """The banner's lines for the optional parts, each only when it runs."""
    lines: list[str] = []
    if ports.get("flower"):
        lines.append(
            f"  flower    http://127.0.0.1:{ports['flower']} (Celery tasks: all green even"
            " while deliveries fail)"
        )
    if ports.get("console"):
        lines.append(
            f"  console   http://127.0.0.1:{ports['console']} (delivery health: retries,"
            " dead letters, failing subscribers)"
        )
    if ports.get("metrics"):
        lines.append(f"  metrics   http://127.0.0.1:{ports['metrics']}/metrics")
    if ports.get("api"):
        lines.append(
            f"  api       http://127.0.0.1:{ports['api']}/v1/events (ingest API: publish over"
            " HTTP; no token on loopback)"
        )
    return lines


def banner(
    *,
    redis_url: str,
    receiver_url: str,
    ports: Mapping[str, int | None],
    subscribers: Path,
    own_subscribers: bool,
    env_file: Path,
    embedded_redis: bool,
    sample_event: Path | None = None,
) -> str:
    """Where everything is, and the commands to try first."""
    cwd = Path.cwd()
    shown_url = redact_redis_url(redis_url)
    hint_url = redis_url if shown_url == redis_url else None
    lines = [
        "",
        "reseller-webhooks dev is running:",
        f"  redis     {shown_url}{' (embedded)' if embedded_redis else ''}",
    ]
    if own_subscribers:
        lines += [
            f"  receiver  {receiver_url}/webhooks (verifies signatures; gets operational events)",
            f"  failing   {receiver_url}/failing (answers 503: retries, dead letters)",
        ]
    else:
        lines.append(f"  receiver  {receiver_url} (answers 200; /failing answers 503)")
    lines += _service_lines(ports)
    origin = "dev's own; set WEBHOOKS_SUBSCRIBERS to use yours" if own_subscribers else "yours"
    lines += [
        f"  subscribers {_shown(subscribers, cwd)} ({origin})",
        "Publish a sample event from another terminal"
        + (" (with REDIS_URL set as for dev):" if hint_url is None else ":"),
        f"  {publish_hint(hint_url, console_script(), cwd)}",
    ]
    if ports.get("api") and sample_event is not None:
        lines += [
            "or over HTTP, as a producer in any language does (answers its id):",
            f"  {curl_hint(int(ports['api'] or 0), sample_event, cwd)}",
        ]
    lines += [
        f"Use the CLI against this dev: source {_shown(env_file, cwd)}, then e.g."
        " reseller-webhooks dlq list",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)
