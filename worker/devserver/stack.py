"""``reseller-webhooks dev``: the whole product on one machine, with nothing installed but pip.

It starts Redis (embedded unless ``REDIS_URL`` is set), a sample receiver (two subscribers, one
failing on purpose: ``sample_subscribers``), a worker serving metrics, Flower and the operator
console and the ingest API, every one on loopback (the console without a login, the API
without a token), prints how to reach them once the worker is ready, and stops all of them
together: on Ctrl-C, on SIGTERM, when any of them dies (named, exit code 1) or when one cannot
start (a port in use is named before anything starts).
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import click

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.worker.config.settings import load_settings
from reseller_webhooks.worker.devserver.banner import banner
from reseller_webhooks.worker.devserver.children import (
    Child,
    first_exit,
    port_open,
    start_api,
    start_console,
    start_flower,
    start_worker,
    stop_all,
)
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.sample_subscribers import (
    FAILING_AFTER,
    SECRET_ENV,
    SampleReplies,
    write_env,
    write_subscribers,
)
from reseller_webhooks.worker.devserver.samples import SAMPLE_EVENT_FILE, write_sample_event

DEV_DIR = Path(".dev")
READY_TIMEOUT_S = 120.0
# How a port is chosen on the command line, per service.
PORT_OPTIONS = {
    "redis": "--redis-port",
    "receiver": "--receiver-port",
    "flower": "--flower-port",
    "console": "--console-port",
    "metrics": "--metrics-port",
    "api": "--api-port",
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


@dataclass(frozen=True)
class Ports:
    """The ports ``dev`` listens on (``None``: that part is not started)."""

    redis: int
    receiver: int
    flower: int | None
    console: int | None
    metrics: int | None = None
    api: int | None = None

    def to_check(self, *, embedded_redis: bool) -> dict[str, int]:
        """Each port ``dev`` will listen on, by service."""
        ports = {"redis": self.redis} if embedded_redis else {}
        ports["receiver"] = self.receiver
        if self.flower:
            ports["flower"] = self.flower
        if self.console:
            ports["console"] = self.console
        if self.metrics:
            ports["metrics"] = self.metrics
        if self.api:
            ports["api"] = self.api
        return ports


@dataclass
class Running:
    """What ``dev`` started, once every part is under way."""

    redis_url: str
    receiver: Receiver
    worker: Child
    flower: Child | None
    console: Child | None
    api: Child | None
    subscribers: Path
    own_subscribers: bool


def run_dev(
    *,
    redis_port: int,
    receiver_port: int,
    flower_port: int | None,
    console_port: int | None = None,
    metrics_port: int | None = None,
    api_port: int | None = None,
) -> None:
    """Run until Ctrl-C or SIGTERM (then return), or until a part dies (then exit with 1)."""
    settings = load_settings()
    env_url = os.environ.get("REDIS_URL")
    ports = Ports(redis_port, receiver_port, flower_port, console_port, metrics_port, api_port)
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
        stack.callback(stop_all, children)  # the last started stops first
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
    """Start the receiver, then the worker, Flower, the console and the API on ``redis_url``;
    write the env file that points the CLI at them."""
    given = os.environ.get("WEBHOOKS_SUBSCRIBERS")
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        receiver = Receiver(
            secret=None if given else secret,
            port=ports.receiver,
            respond=SampleReplies(verifying=not given),
        )
    except OSError as exc:
        raise ConfigError(
            f"port {ports.receiver} (receiver) cannot be listened on: {exc.strerror}"
        ) from None
    stack.callback(receiver.stop)
    receiver.start()
    subscribers = Path(given).resolve() if given else write_subscribers(DEV_DIR, receiver.url)
    shared = {"REDIS_URL": redis_url, "WEBHOOKS_SUBSCRIBERS": str(subscribers)}
    own_secret = {} if given else {SECRET_ENV: secret}
    write_env(DEV_DIR, {**shared, **own_secret})
    env = {
        "WEBHOOKS_FAILING_AFTER": FAILING_AFTER,
        **os.environ,
        **shared,
        **own_secret,
        "WEBHOOKS_METRICS_HOST": "127.0.0.1",
        "WEBHOOKS_METRICS_PORT": str(ports.metrics or 0),
    }
    worker = start_worker(env)
    children.append(worker)
    # Flower, the console and the API never need a subscriber's secret.
    plain = {k: v for k, v in env.items() if k != SECRET_ENV}
    flower = start_flower(plain, ports.flower) if ports.flower else None
    # On loopback and without a login (unless the environment sets one).
    console = start_console(plain, ports.console) if ports.console else None
    api = start_api(plain, ports.api) if ports.api else None
    if api:
        write_sample_event(DEV_DIR)
    children += [child for child in (flower, console, api) if child]
    return Running(redis_url, receiver, worker, flower, console, api, subscribers, not given)


def _waiting_for(running: Running, ports: Ports) -> list[str]:
    """The parts not ready yet."""
    return [
        name
        for name, ready in (
            ("the worker", running.worker.ready.is_set()),
            ("flower", running.flower is None or port_open(ports.flower or 0)),
            ("the console", running.console is None or port_open(ports.console or 0)),
            ("the api", running.api is None or port_open(ports.api or 0)),
            ("the metrics", not ports.metrics or port_open(ports.metrics)),
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
        failure = first_exit(children)
        if failure or stopped.wait(0.1):
            return False, failure
        if time.monotonic() > deadline:
            return False, f"{' and '.join(waiting)} not ready within {READY_TIMEOUT_S:.0f} s"
    return True, None


def _banner(running: Running, ports: Ports, *, embedded_redis: bool) -> str:
    return banner(
        redis_url=running.redis_url,
        receiver_url=running.receiver.url,
        ports={
            "flower": ports.flower,
            "console": ports.console,
            "metrics": ports.metrics,
            "api": ports.api,
        },
        subscribers=running.subscribers,
        own_subscribers=running.own_subscribers,
        env_file=DEV_DIR / "env",
        sample_event=DEV_DIR / SAMPLE_EVENT_FILE,
        embedded_redis=embedded_redis,
    )


def _watch(children: list[Child], stopped: threading.Event) -> str | None:
    """Until ``dev`` is told to stop (``None``) or a part dies (which one and how)."""
    while not stopped.wait(0.5):
        failure = first_exit(children)
        if failure:
            return failure
    return None
