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


@dataclass(frozen=True)
class Ports:
    """The ports ``dev`` listens on (``None``: that part is not started)."""

    redis: int
    receiver: int
    flower: int | None
    console: int | None

    def to_check(self, *, embedded_redis: bool) -> dict[str, int]:
        """Each port ``dev`` will listen on, by service."""
        ports = {"redis": self.redis} if embedded_redis else {}
        ports["receiver"] = self.receiver
        if self.flower:
            ports["flower"] = self.flower
        if self.console:
            ports["console"] = self.console
        return ports


@dataclass
class Running:
    """What ``dev`` started, once every part is under way."""

    redis_url: str
    receiver: Receiver
    worker: Child
    flower: Child | None
    console: Child | None


def run_dev(
    *, redis_port: int, receiver_port: int, flower_port: int | None, console_port: int | None = None
) -> None:
    """Run until Ctrl-C or SIGTERM (then return), or until a part dies (then exit with 1)."""
    settings = load_settings()
    env_url = os.environ.get("REDIS_URL")
    ports = Ports(redis_port, receiver_port, flower_port, console_port)
    problem = busy_ports(ports.to_check(embedded_redis=not env_url))
    if problem:
        raise ConfigError(problem)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    failure: str | None = None
    DEV_DIR.mkdir(exist_ok=True)
    with ExitStack() as stack:
        stack.callback(click.echo, "stopped")
        children: list[Child] = []
        stack.callback(_stop_all, children)  # the last started stops first
        try:
            redis_url = env_url or _start_redis(settings.redis_server, ports.redis, children)
            running = _start_parts(stack, children, redis_url, ports)
            ready, failure = _wait_ready(running, ports, children, stopped)
            if ready:
                click.echo(_banner(running, ports, embedded_redis=not env_url))
                failure = _watch(children, stopped)
        except KeyboardInterrupt:
            pass
        if failure:
            click.echo(f"error: {failure}; stopping everything", err=True)
    if failure:
        sys.exit(1)


def _start_redis(binary: Path | None, port: int, children: list[Child]) -> str:
    """Start the embedded Redis; its URL."""
    server = RedisServer(DEV_DIR / "redis", port=port, binary=binary)
    server.start()
    assert server.process is not None
    children.append(Child("redis-server (embedded)", server.process))
    return server.url


def _start_parts(stack: ExitStack, children: list[Child], redis_url: str, ports: Ports) -> Running:
    """Start the receiver, then the worker, Flower and the console on ``redis_url``."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        receiver = Receiver(secret=secret, port=ports.receiver, on_receive=_print_delivery)
    except OSError as exc:
        raise ConfigError(
            f"port {ports.receiver} (receiver) cannot be listened on: {exc.strerror}"
        ) from None
    stack.callback(receiver.stop)
    receiver.start()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "WEBHOOKS_SUBSCRIBERS": str(_write_subscribers(receiver)),
        "DEV_WEBHOOK_SECRET": secret,
    }
    worker = _start_worker(env)
    children.append(worker)
    flower = _start_flower(env, ports.flower) if ports.flower else None
    if flower:
        children.append(flower)
    # On loopback and without a login (unless the environment sets one); it never needs the
    # subscriber's secret.
    console_env = {k: v for k, v in env.items() if k != "DEV_WEBHOOK_SECRET"}
    console = _start_console(console_env, ports.console) if ports.console else None
    if console:
        children.append(console)
    return Running(redis_url, receiver, worker, flower, console)


def _start_worker(env: Mapping[str, str]) -> Child:
    """The worker, its output copied through; ``ready`` is set at Celery's ready line."""
    worker = Child(
        "the worker",
        subprocess.Popen(
            [sys.executable, "-m", "reseller_webhooks.worker", "worker"],
            env={**env, "PYTHONUNBUFFERED": "1"},  # its lines as they come
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ),
    )
    assert worker.process.stdout is not None
    threading.Thread(
        target=_pump,
        args=(worker.process.stdout, sys.stdout.buffer, worker.ready, b" ready."),
        daemon=True,
    ).start()
    return worker


def _start_flower(env: Mapping[str, str], port: int) -> Child:
    command = [sys.executable, "-m", "celery", "-A", "reseller_webhooks.worker.queue.app"]
    return Child(
        "flower",
        subprocess.Popen(
            [*command, "flower", f"--port={port}", "--address=127.0.0.1"],
            env={**env, "FLOWER_UNAUTHENTICATED_API": "true"},  # loopback only
        ),
    )


def _start_console(env: Mapping[str, str], port: int) -> Child:
    return Child(
        "the console",
        subprocess.Popen(
            [
                *(sys.executable, "-m", "reseller_webhooks.worker", "console"),
                "--host=127.0.0.1",
                f"--port={port}",
            ],
            env=env,
        ),
    )


def _waiting_for(running: Running, ports: Ports) -> list[str]:
    """The parts not ready yet."""
    return [
        name
        for name, ready in (
            ("the worker", running.worker.ready.is_set()),
            ("flower", running.flower is None or _port_open(ports.flower or 0)),
            ("the console", running.console is None or _port_open(ports.console or 0)),
        )
        if not ready
    ]


def _wait_ready(
    running: Running, ports: Ports, children: list[Child], stopped: threading.Event
) -> tuple[bool, str | None]:
    """Wait until every part is ready: ``(True, None)``; ``(False, why)`` when one died or
    took too long; ``(False, None)`` when ``dev`` was told to stop first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while waiting := _waiting_for(running, ports):
        failure = _first_exit(children)
        if failure or stopped.wait(0.1):
            return False, failure
        if time.monotonic() > deadline:
            return False, f"{' and '.join(waiting)} not ready within {READY_TIMEOUT_S:.0f} s"
    return True, None


def _banner(running: Running, ports: Ports, *, embedded_redis: bool) -> str:
    """Where everything is, and the command that publishes a sample event."""
    shown_url = redact_redis_url(running.redis_url)
    hint_url = running.redis_url if shown_url == running.redis_url else None
    return (
        "\nreseller-webhooks dev is running:\n"
        f"  redis     {shown_url}{' (embedded)' if embedded_redis else ''}\n"
        f"  receiver  {running.receiver.url}/webhooks (verifies signatures)\n"
        + (f"  flower    http://127.0.0.1:{ports.flower}\n" if ports.flower else "")
        + (f"  console   http://127.0.0.1:{ports.console}\n" if ports.console else "")
        + "Publish a sample event from another terminal"
        + (" (with REDIS_URL set as for dev):\n" if hint_url is None else ":\n")
        + f"  {publish_hint(hint_url, console_script(), Path.cwd())}\n"
        "Ctrl-C stops everything.\n"
    )


def _watch(children: list[Child], stopped: threading.Event) -> str | None:
    """Until ``dev`` is told to stop (``None``) or a part dies (which one and how)."""
    while not stopped.wait(0.5):
        failure = _first_exit(children)
        if failure:
            return failure
    return None
