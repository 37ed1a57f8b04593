"""Processes of a benchmark run (Redis, receiver, workers); waits are on counts, bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from reseller_webhooks.worker.devserver.redis_server import RedisServer, free_port


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.005
) -> Any:
    """Poll ``predicate`` until truthy and return its value; ``TimeoutError`` after
    ``timeout_s`` (the benchmark and the tests wait with it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


class ReceiverProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", str(self.port)],
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "listening"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url(path), timeout=30) as response:  # noqa: S310
            return json.load(response)

    def count(self) -> int:
        return int(self._get("/stats")["count"])

    def count_of(self, kind: str) -> int:
        """Requests received on paths whose first segment is ``kind``."""
        return int(self._get("/stats")["kinds"].get(kind, 0))

    def records(self) -> list[tuple[float, str, str]]:
        return [(float(t), str(i), str(p)) for t, i, p in self._get("/dump")]

    def reset(self) -> None:
        request = urllib.request.Request(self.url("/reset"), data=b"", method="POST")  # noqa: S310
        urllib.request.urlopen(request, timeout=30).close()  # noqa: S310

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Processes:
    """Everything started for a run, stopped together."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis = RedisServer(directory / "redis").start()
        self.client = redis.Redis.from_url(self.redis.url)
        self.receiver = ReceiverProcess()
        self.children: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "REDIS_URL": self.redis.url, **extra}

    def start(
        self, argv: list[str], env: dict[str, str], name: str, *, cpu: int | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a child logging to ``name``.log; ``cpu`` pins it to that core."""
        log = (self.directory / f"{name}.log").open("wb")
        child = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=None if cpu is None else lambda: os.sched_setaffinity(0, {cpu}),
        )
        self.children.append(child)
        return child

    def stop(self, child: subprocess.Popen[bytes]) -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def flush(self) -> None:
        flush_keeping_identity(self.client)
        self.receiver.reset()

    def close(self) -> None:
        for child in self.children:
            self.stop(child)
        self.receiver.stop()
        self.client.close()
        self.redis.stop()


def flush_keeping_identity(client: redis.Redis, prefix: str = "rw") -> None:
    """Empty Redis between scenarios, but keep the store's identity and its published count:
    publishers and workers that live across scenarios would otherwise (rightly) take the empty
    store for one that lost its data and stop."""
    kept = {key: client.hgetall(key) for key in (f"{prefix}:store", f"{prefix}:tally")}
    client.flushall()
    for key, fields in kept.items():
        if fields:
            client.hset(key, mapping=fields)


def redis_main_thread_cpu_s(client: redis.Redis) -> float:
    """The Redis server's main-thread CPU so far (``INFO cpu``, user + sys), s."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
