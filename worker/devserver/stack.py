"""``reseller-webhooks dev``: the whole product on one machine, with nothing installed but pip.

It starts Redis (embedded unless ``REDIS_URL`` is set), a sample receiver, a worker, Flower and
the operator console (on loopback, without a login), prints how to reach them once the worker is
ready, and stops all of them together: on Ctrl-C, on
SIGTERM, when any of them dies (named, exit code 1) or when one cannot start (a port in use is
named before anything starts).
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import click
import yaml

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.settings import redact_redis_url
from reseller_webhooks.worker.config.settings import load_settings
from reseller_webhooks.worker.devserver.receiver import Received, Receiver
from reseller_webhooks.worker.devserver.redis_server import RedisServer

DEV_DIR = Path(".dev")
READY_TIMEOUT_S = 120.0
# How a port is chosen on the command line, per service.
PORT_OPTIONS = {
    "redis": "--redis-port",
    "receiver": "--receiver-port",
    "flower": "--flower-port",
    "console": "--console-port",
}


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (as Redis, Flower and the receiver
    do: with SO_REUSEADDR, so a connection lingering in TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def busy_ports(
    ports: Mapping[str, int], is_free: Callable[[int], bool] = port_is_free
) -> str | None:
    """One line naming every service whose port is taken, or ``None`` when all are free."""
    busy = [
        f"port {port} ({service}) is already in use: stop what holds it or choose another "
        f"with {PORT_OPTIONS[service]}"
        for service, port in ports.items()
        if not is_free(port)
    ]
    return "; ".join(busy) or None


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


def _print_delivery(item: Received) -> None:
    mark = "verified" if item.verified else "SIGNATURE INVALID"
    event = item.json.get("event", "?") if item.body.startswith(b"{") else "?"
    click.echo(
        f"[receiver] {event} webhook-id={item.headers.get('webhook-id')} ({mark}, "
        f"{len(item.body)} bytes)"
    )


@dataclass
class Child:
    """A process ``dev`` started, with the name it is reported by."""

    name: str
    process: subprocess.Popen[bytes]
    ready: threading.Event = field(default_factory=threading.Event)

    def exited(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _pump(source: IO[bytes], sink: IO[bytes], ready: threading.Event, marker: bytes) -> None:
    """Copy a child's output through, line by line, and set ``ready`` at a line ending in
    ``marker`` (Celery's ``webhooks-123@host ready.``)."""
    for line in iter(source.readline, b""):
        sink.write(line)
        sink.flush()
        if line.rstrip().endswith(marker):
            ready.set()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _write_subscribers(receiver: Receiver) -> Path:
    path = DEV_DIR / "subscribers.yaml"
    path.write_text(
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
    return path.resolve()


def _stop_all(children: list[Child]) -> None:
    for child in reversed(children):  # the worker and Flower before Redis
        child.stop()


def _first_exit(children: list[Child]) -> str | None:
    for child in children:
        code = child.exited()
        if code is not None:
            return describe_exit(child.name, code)
    return None


def describe_exit(name: str, code: int) -> str:
    """``the worker exited with code 2``, ``flower was killed by SIGKILL``."""
    if code < 0:
        try:
            return f"{name} was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"{name} was killed by signal {-code}"
    return f"{name} exited with code {code}"


def run_dev(
    *, redis_port: int, receiver_port: int, flower_port: int | None, console_port: int | None = None
) -> None:
    """Run until Ctrl-C or SIGTERM (then return), or until a part dies (then exit with 1)."""
    settings = load_settings()
    env_url = os.environ.get("REDIS_URL")
    ports = {"redis": redis_port} if not env_url else {}
    ports["receiver"] = receiver_port
    if flower_port:
        ports["flower"] = flower_port
    if console_port:
        ports["console"] = console_port
    problem = busy_ports(ports)
    if problem:
        raise ConfigError(problem)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    failure: str | None = None
    DEV_DIR.mkdir(exist_ok=True)
    with ExitStack() as stack:
        stack.callback(click.echo, "stopped")
        children: list[Child] = []
        stack.callback(_stop_all, children)
        try:
            if env_url:
                redis_url = env_url
            else:
                server = RedisServer(
                    DEV_DIR / "redis", port=redis_port, binary=settings.redis_server
                )
                server.start()
                assert server.process is not None
                children.append(Child("redis-server (embedded)", server.process))
                redis_url = server.url
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
            try:
                receiver = Receiver(secret=secret, port=receiver_port, on_receive=_print_delivery)
            except OSError as exc:
                raise ConfigError(
                    f"port {receiver_port} (receiver) cannot be listened on: {exc.strerror}"
                ) from None
            stack.callback(receiver.stop)
            receiver.start()
            env = {
                **os.environ,
                "REDIS_URL": redis_url,
                "WEBHOOKS_SUBSCRIBERS": str(_write_subscribers(receiver)),
                "DEV_WEBHOOK_SECRET": secret,
            }
            worker = Child(
                "the worker",
                subprocess.Popen(
                    [sys.executable, "-m", "reseller_webhooks.worker", "worker"],
                    env={**env, "PYTHONUNBUFFERED": "1"},  # its lines as they come
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                ),
            )
            children.append(worker)
            assert worker.process.stdout is not None
            threading.Thread(
                target=_pump,
                args=(
                    worker.process.stdout,
                    sys.stdout.buffer,
                    worker.ready,
                    b" ready.",
                ),
                daemon=True,
            ).start()
            flower = None
            if flower_port:
                flower = Child(
                    "flower",
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "celery",
                            "-A",
                            "reseller_webhooks.worker.queue.app",
                            "flower",
                            f"--port={flower_port}",
                            "--address=127.0.0.1",
                        ],
                        env={**env, "FLOWER_UNAUTHENTICATED_API": "true"},  # loopback only
                    ),
                )
                children.append(flower)
            console = None
            if console_port:
                # On loopback and without a login (unless the environment sets one); it never
                # needs the subscriber's secret.
                console = Child(
                    "the console",
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "worker",
                            "console",
                            "--host=127.0.0.1",
                            f"--port={console_port}",
                        ],
                        env={k: v for k, v in env.items() if k != "DEV_WEBHOOK_SECRET"},
                    ),
                )
                children.append(console)

            deadline = time.monotonic() + READY_TIMEOUT_S
            while waiting := [
                name
                for name, ready in (
                    ("the worker", worker.ready.is_set()),
                    ("flower", flower is None or _port_open(flower_port or 0)),
                    ("the console", console is None or _port_open(console_port or 0)),
                )
                if not ready
            ]:
                failure = _first_exit(children)
                if failure or stopped.wait(0.1):
                    break
                if time.monotonic() > deadline:
                    failure = f"{' and '.join(waiting)} not ready within {READY_TIMEOUT_S:.0f} s"
                    break
            else:
                shown_url = redact_redis_url(redis_url)
                hint_url = redis_url if shown_url == redis_url else None
                click.echo(
                    "\nreseller-webhooks dev is running:\n"
                    f"  redis     {shown_url}{'' if env_url else ' (embedded)'}\n"
                    f"  receiver  {receiver.url}/webhooks (verifies signatures)\n"
                    + (f"  flower    http://127.0.0.1:{flower_port}\n" if flower_port else "")
                    + (f"  console   http://127.0.0.1:{console_port}\n" if console_port else "")
                    + "Publish a sample event from another terminal"
                    + (" (with REDIS_URL set as for dev):\n" if hint_url is None else ":\n")
                    + f"  {publish_hint(hint_url, console_script(), Path.cwd())}\n"
                    "Ctrl-C stops everything.\n"
                )
                while not stopped.wait(0.5):
                    failure = _first_exit(children)
                    if failure:
                        break
        except KeyboardInterrupt:
            pass
        if failure:
            click.echo(f"error: {failure}; stopping everything", err=True)
    if failure:
        sys.exit(1)
