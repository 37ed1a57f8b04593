"""The processes ``dev`` starts (the worker, Flower, the console, the ingest API): how each is
started, named when it dies, and stopped."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO


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


def pump(source: IO[bytes], sink: IO[bytes], ready: threading.Event, marker: bytes) -> None:
    """Copy a child's output through, line by line, and set ``ready`` at a line ending in
    ``marker`` (Celery's ``webhooks-123@host ready.``)."""
    for line in iter(source.readline, b""):
        sink.write(line)
        sink.flush()
        if line.rstrip().endswith(marker):
            ready.set()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_all(children: list[Child]) -> None:
    for child in reversed(children):  # the worker and Flower before Redis
        child.stop()


def first_exit(children: list[Child]) -> str | None:
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


def start_worker(env: Mapping[str, str]) -> Child:
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
        target=pump,
        args=(worker.process.stdout, sys.stdout.buffer, worker.ready, b" ready."),
        daemon=True,
    ).start()
    return worker


def start_flower(env: Mapping[str, str], port: int) -> Child:
    command = [sys.executable, "-m", "celery", "-A", "reseller_webhooks.worker.queue.app"]
    return Child(
        "flower",
        subprocess.Popen(
            [*command, "flower", f"--port={port}", "--address=127.0.0.1"],
            env={**env, "FLOWER_UNAUTHENTICATED_API": "true"},  # loopback only
        ),
    )


def start_console(env: Mapping[str, str], port: int) -> Child:
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


def start_api(env: Mapping[str, str], port: int) -> Child:
    """The ingest API on loopback, without producer tokens (so without a token to pass: the
    API itself refuses to listen elsewhere without them)."""
    return Child(
        "the api",
        subprocess.Popen(
            [
                *(sys.executable, "-m", "reseller_webhooks.worker", "api"),
                "--host=127.0.0.1",
                f"--port={port}",
            ],
            env={k: v for k, v in env.items() if k != "WEBHOOKS_API_TOKENS"},
        ),
    )
