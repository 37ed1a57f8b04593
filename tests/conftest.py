"""Real parts for every test: a private redis-server, real worker processes, a loopback receiver.

Each session starts its own Redis on a free loopback port (never the one a machine may already
run). Without a redis-server the real-process tests are skipped locally, and fail under CI=true.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis
import yaml

from bench.harness import wait_for
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.records.store import Route, Store

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Property tests check what inputs do, not how fast: on a loaded 2-core machine Hypothesis's
# timing checks (per-example deadline, "too slow" data generation) fail tests that are correct.
hypothesis.settings.register_profile(
    "project", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("project")
ROOT = Path(__file__).resolve().parent.parent


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until truthy; fail the test after ``timeout_s``."""
    try:
        return wait_for(predicate, timeout_s, what or str(predicate))
    except TimeoutError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    try:
        server = RedisServer(
            tmp_path_factory.mktemp("redis"), binary=os.environ.get("REDIS_SERVER")
        ).start()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"CI=true and no redis-server could be started: {exc}")
        pytest.skip(f"no redis-server available: {exc}")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def keys() -> Keys:
    return Keys("rw")


@pytest.fixture
def publisher(redis_url: str) -> Iterator[Publisher]:
    with Publisher(ProducerSettings(redis_url=redis_url, visibility_timeout_s=3)) as pub:
        yield pub


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rcv:
        yield rcv


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@dataclass
class Deployment:
    """A subscribers file plus the environment workers, schedulers and the CLI run with."""

    tmp_path: Path
    redis_url: str
    config: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    def subscriber(
        self, sub_id: str, url: str, events: list[str] | None = None, **extra: Any
    ) -> str:
        """Add a subscriber (secret via env) and return its secret."""
        secret = new_secret()
        env_name = f"SECRET_{sub_id.upper().replace('-', '_')}"
        self.secrets[env_name] = secret
        self.config.setdefault("subscribers", []).append(
            {
                "id": sub_id,
                "url": url,
                "events": events or ["reseller.user.*"],
                "secret_env": env_name,
                **extra,
            }
        )
        return secret

    @property
    def env(self) -> dict[str, str]:
        path = self.tmp_path / "subscribers.yaml"
        path.write_text(yaml.safe_dump({"allow_private_networks": True, **self.config}))
        return {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "WEBHOOKS_SUBSCRIBERS": str(path),
            "WEBHOOKS_VISIBILITY_TIMEOUT_S": "3",
            "WEBHOOKS_SCHEDULER_INTERVAL_S": "0.05",
            "WEBHOOKS_METRICS_PORT": "0",  # tests that scrape pick a free port
            **self.secrets,
            **self.settings,
        }

    def cli(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reseller_webhooks.worker", *args],
            env=self.env,
            input=input.decode() if input else None,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start_worker(self, *extra: str, wait: bool = True) -> WorkerProcess:
        return self.start_process("worker", *extra, ready=" ready." if wait else None)

    def start_failure(self) -> tuple[WorkerProcess, list[str]]:
        """Start a worker that must refuse to start: wait for it to exit; its ``error:`` lines."""
        worker = self.start_worker(wait=False)
        try:
            worker.process.wait(timeout=60)
        finally:
            worker.stop()
        return worker, [line for line in worker.log().splitlines() if line.startswith("error:")]

    def start_scheduler(self) -> WorkerProcess:
        return self.start_process("scheduler", ready="scheduler running")

    def start_console(self, *extra: str, **settings: str) -> tuple[WorkerProcess, str]:
        """``reseller-webhooks console`` on a free loopback port, without the subscribers'
        secrets in its environment (it never needs them); returns it and its base URL."""
        ready = "console on http://"
        console = self.start_process(
            "console", "--port", "0", *extra, ready=ready, settings=settings, with_secrets=False
        )
        line = next(line for line in console.log().splitlines() if line.startswith(ready))
        return console, line.split()[2]

    def start_process(
        self,
        command: str,
        *extra: str,
        ready: str | None,
        settings: dict[str, str] | None = None,
        with_secrets: bool = True,
    ) -> WorkerProcess:
        log_path = self.tmp_path / f"{command}-{len(self.workers)}.log"
        env = {**self.env, **(settings or {})}
        if not with_secrets:
            env = {k: v for k, v in env.items() if k not in self.secrets}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "reseller_webhooks.worker", command, *extra],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        handle = WorkerProcess(process, log_path, env)
        self.workers.append(handle)
        if ready:
            wait_until(
                lambda: ready in handle.log() or process.poll() is not None,
                timeout_s=30,
                what=f"{command} ready",
            )
            if process.poll() is not None:
                pytest.fail(f"{command} exited at start:\n{handle.log()[-3000:]}")
        return handle


@pytest.fixture
def deployment(tmp_path: Path, redis_url: str) -> Iterator[Deployment]:
    dep = Deployment(tmp_path=tmp_path, redis_url=redis_url)
    yield dep
    for w in dep.workers:
        w.stop()


def settled(client: redis.Redis, keys: Keys) -> bool:
    """Nothing left to dispatch or deliver, and no trigger waiting in a queue."""
    return (
        client.llen(keys.pending) == 0
        and client.zcard(keys.due) == 0
        and not any(client.llen(k) for k in client.scan_iter(match=keys.ready("*")))
        and client.llen(keys.queue) == 0
        and client.llen(keys.retry_queue) == 0
    )


class Script:
    """Receiver behaviour per path: a queue of replies consumed in order, then a default."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply()
        self.queues: dict[str, list[Reply]] = {}
        self.defaults: dict[str, Reply] = {}
        self._lock = threading.Lock()

    def then(self, path: str, *replies: Reply) -> Script:
        with self._lock:
            self.queues.setdefault(path, []).extend(replies)
        return self

    def always(self, path: str, reply: Reply) -> Script:
        with self._lock:
            self.defaults[path] = reply
        return self

    def __call__(self, item: Received) -> Reply:
        with self._lock:
            queue = self.queues.get(item.path)
            if queue:
                return queue.pop(0)
            return self.defaults.get(item.path, self.default)


@pytest.fixture
def script(receiver: Receiver) -> Script:
    s = Script()
    receiver.respond = s
    return s


def attempt_log(client: redis.Redis, keys: Keys, delivery_id: str) -> list[dict[str, Any]]:
    return [json.loads(r) for r in client.lrange(keys.attempts(delivery_id), 0, -1)]


#: One subscriber "s" for both event types, ordered per user: routes for driving the scripts.
ROUTES = {
    "reseller.user.created": [Route("s", ordered=True, coalesce=False)],
    "reseller.user.updated": [Route("s", ordered=True, coalesce=False)],
}


@pytest.fixture
def store(rdb: redis.Redis, keys: Keys) -> Store:
    """The records' scripts on the session's Redis, without workers."""
    return Store(
        rdb,
        keys,
        record_retention_s=3600,
        dead_letter_retention_s=3600,
        attempt_log_size=10,
        trigger_expiry_s=30,
        failing_after=3,
    )
