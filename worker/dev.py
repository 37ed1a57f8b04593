"""``reseller-webhooks dev``: the whole product on one machine, with nothing installed but pip."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

import click
import yaml

from producers.connection import redact_url
from worker.receiver import Received, Receiver
from worker.redis_server import RedisServer
from worker.settings import load_settings

DEV_DIR = Path(".dev")


def _print_delivery(item: Received) -> None:
    mark = "verified" if item.verified else "SIGNATURE INVALID"
    event = item.json.get("event", "?") if item.body.startswith(b"{") else "?"
    click.echo(
        f"[receiver] {event} webhook-id={item.headers.get('webhook-id')} ({mark}, "
        f"{len(item.body)} bytes)"
    )


def run_dev(*, redis_port: int, receiver_port: int, flower_port: int | None) -> None:
    settings = load_settings()
    DEV_DIR.mkdir(exist_ok=True)
    env_url = os.environ.get("REDIS_URL")
    server = None
    if env_url:
        redis_url = env_url
    else:
        server = RedisServer(DEV_DIR / "redis", port=redis_port, binary=settings.redis_server)
        server.start()
        redis_url = server.url
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    receiver = Receiver(secret=secret, port=receiver_port, on_receive=_print_delivery).start()
    subscribers = DEV_DIR / "subscribers.yaml"
    subscribers.write_text(
        yaml.safe_dump(
            {
                "allow_private_networks": True,
                "retry": {"schedule_s": [0, 1, 5, 30]},
                "subscribers": [
                    {
                        "id": "sample-receiver",
                        "url": f"{receiver.url}/webhooks",
                        "events": ["reseller.user.*"],
                        "secret_env": "DEV_WEBHOOK_SECRET",
                    }
                ],
            },
            sort_keys=False,
        )
    )
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "WEBHOOKS_SUBSCRIBERS": str(subscribers.resolve()),
        "DEV_WEBHOOK_SECRET": secret,
    }
    exe = [sys.executable, "-m", "worker"]
    children = [subprocess.Popen([*exe, "worker"], env=env)]
    if flower_port:
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "worker.app",
                    "flower",
                    f"--port={flower_port}",
                    "--address=127.0.0.1",
                ],
                env={**env, "FLOWER_UNAUTHENTICATED_API": "true"},  # loopback only
            )
        )
    shown_url = redact_url(redis_url)  # a password stays out of the terminal
    click.echo(
        "\nreseller-webhooks dev is running:\n"
        f"  redis     {shown_url}{' (embedded)' if server else ''}\n"
        f"  receiver  {receiver.url}/webhooks (verifies signatures)\n"
        + (f"  flower    http://127.0.0.1:{flower_port}\n" if flower_port else "")
        + "In another terminal:\n"
        f"  REDIS_URL={shown_url} reseller-webhooks publish reseller.user.created --sample\n"
        "Ctrl-C stops everything.\n"
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            if any(c.poll() is not None for c in children):
                click.echo("a child process exited; stopping", err=True)
                break
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        receiver.stop()
        if server:
            server.stop()
        click.echo("stopped")
