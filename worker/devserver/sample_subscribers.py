"""What ``dev`` delivers to: its own subscribers file (unless ``WEBHOOKS_SUBSCRIBERS`` names
one), the replies of its sample receiver, and the env file that points the CLI at it.

Two subscribers share the sample receiver: ``sample-receiver`` answers 200 and also receives
the operational events; ``failing`` answers 503 to every attempt of odd-numbered events (they
end as dead letters) and to the first attempt of even-numbered ones (delivered on the retry),
so retries, a dead letter and every operational event show within a minute of publishing.
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from reseller_webhooks.worker.devserver.receiver import Received, Reply

#: dev's retry schedule (seconds): a dead letter 17 s after the first attempt.
SCHEDULE_S = [0, 2, 5, 10]
#: Failed attempts in a row before ``webhooks.subscriber.failing`` (unless set).
FAILING_AFTER = "3"
SECRET_ENV = "DEV_WEBHOOK_SECRET"  # noqa: S105 - the name of the variable, not a secret
FAILING_PATH = "/failing"


def failing_status(event_number: int, attempt: int) -> int:
    """The ``failing`` subscriber's answer to ``attempt`` (1, 2, ...) of the ``event_number``-th
    event it sees (1, 2, ...): odd events always fail, even ones fail their first attempt."""
    if event_number % 2 == 1 or attempt == 1:
        return 503
    return 200


class SampleReplies:
    """The sample receiver's answers, by path, printed one line per request."""

    def __init__(self, *, verifying: bool, echo: Callable[[str], None] = click.echo) -> None:
        self._verifying = verifying
        self._lock = threading.Lock()
        self._events: dict[str, tuple[int, int]] = {}  # webhook-id -> (event number, attempts)
        self._echo = echo

    def __call__(self, item: Received) -> Reply:
        path = item.path.split("?", 1)[0]
        status = 200
        note = ""
        if path == FAILING_PATH:
            with self._lock:
                webhook_id = item.headers.get("webhook-id", "")
                number, attempts = self._events.get(webhook_id, (len(self._events) + 1, 0))
                self._events[webhook_id] = (number, attempts + 1)
            status = failing_status(number, attempts + 1)
            note = f", attempt {attempts + 1}" + (" (a sample failure)" if status != 200 else "")
        mark = "verified" if item.verified else "SIGNATURE INVALID"
        if not self._verifying:
            mark = "not verified: not dev's subscribers file"
        event = item.json.get("event", "?") if item.body.startswith(b"{") else "?"
        self._echo(
            f"[receiver] {path} {event} webhook-id={item.headers.get('webhook-id')} "
            f"({mark}, {len(item.body)} bytes): {status}{note}"
        )
        return Reply(status, body=b"sample failure" if status != 200 else b"")


def subscribers_file(receiver_url: str) -> dict[str, Any]:
    """dev's own subscribers file: both sample subscribers on the receiver."""
    return {
        "allow_private_networks": True,
        "retry": {"schedule_s": SCHEDULE_S},
        "subscribers": [
            {
                "id": "sample-receiver",
                "url": f"{receiver_url}/webhooks",
                "events": ["reseller.user.*", "webhooks.*"],
                "secret_env": SECRET_ENV,
            },
            {
                "id": "failing",
                "url": f"{receiver_url}{FAILING_PATH}",
                "events": ["reseller.user.*"],
                "secret_env": SECRET_ENV,
            },
        ],
    }


def write_subscribers(directory: Path, receiver_url: str) -> Path:
    path = directory / "subscribers.yaml"
    path.write_text(yaml.safe_dump(subscribers_file(receiver_url), sort_keys=False))
    return path.resolve()


def write_env(directory: Path, settings: Mapping[str, str]) -> Path:
    """``directory/env``: ``export NAME=value`` lines to ``source``; readable by its owner only
    (it may hold a secret and a Redis password)."""
    path = directory / "env"
    text = "# reseller-webhooks dev: `source` this file to point the CLI at the running dev\n"
    text += "".join(f"export {name}={shlex.quote(value)}\n" for name, value in settings.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)
    return path
