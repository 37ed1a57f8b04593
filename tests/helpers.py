"""What the tests share: a deployment of real processes, bounded waits, receiver scripts, and a
few values more than one test module reads. Fixtures live in conftest.py; this module has none.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from bench.harness import wait_for
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Received, Reply
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.ops.audit import AuditReport, audit
from reseller_webhooks.worker.records.shapes import Route
from reseller_webhooks.worker.records.store import Store

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ROOT = Path(__file__).resolve().parent.parent

#: The webhook example the seed documents, as a subscriber receives it.
SEED_EXAMPLE = json.loads((Path(__file__).parent / "data/seed_webhook_example.json").read_text())

#: One subscriber "s" for both event types, ordered per user: routes for driving the scripts.
ROUTES = {
    "reseller.user.created": [Route("s", ordered=True, coalesce=False)],
    "reseller.user.updated": [Route("s", ordered=True, coalesce=False)],
}

#: How often a wait looks again: short next to what is waited for, long enough that a few
#: sessions polling side by side on two cores leave the processes under test the CPU.
POLL_S = 0.02
#: The ``celery`` command against the worker's app, as Flower and operators run it.
CELERY = (sys.executable, "-m", "celery", "-A", "reseller_webhooks.worker.queue.app")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
    """Poll ``predicate`` until truthy; fail the test after ``timeout_s``."""
    try:
        return wait_for(predicate, timeout_s, what or str(predicate), POLL_S)
    except TimeoutError as exc:
        pytest.fail(str(exc))


def shape(value: Any) -> Any:
    """Keys all the way down, and the JSON type of each leaf."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


def one_line_error(result: subprocess.CompletedProcess[str], expected: str, code: int = 2) -> None:
    """A command refused with exit ``code`` and one ``error:`` line naming ``expected``."""
    stderr = result.stderr
    assert result.returncode == code, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0, stderr
    assert stderr.startswith("error: "), stderr
    assert expected in stderr, stderr


def publish_burst(publisher: Publisher, count: int, batch: int = 200, start: int = 0) -> list[str]:
    """``count`` users created (one event per user, as a sign-up burst would be), numbered
    from ``start``."""
    user = sample_user()
    ids: list[str] = []
    for first in range(start, start + count, batch):
        n = min(batch, start + count - first)
        ids += publisher.publish_batch(
            [("reseller.user.created", {**user, "id": f"usr_{first + k}"}) for k in range(n)]
        )
    return ids


def report(name: str, **figures: object) -> None:
    """Figures a scenario prints (seen with ``-s``); never asserted."""
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, the way an operator stops a worker: it finishes what it holds first."""
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
    config: dict[str, Any] = field(default_factory=lambda: {"subscribers": []})
    secrets: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    workers: list[WorkerProcess] = field(default_factory=list)

    def subscriber(
        self,
        sub_id: str,
        url: str,
        events: list[str] | None = None,
        *,
        secret: str | None = None,
        **extra: Any,
    ) -> str:
        """Add a subscriber (its secret, a new one unless given, via env) and return its secret."""
        secret = secret or new_secret()
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

    def inspect(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``celery -A <the worker's app> inspect ARGS --timeout 10``, as Flower asks a worker."""
        return subprocess.run(
            [*CELERY, "inspect", *args, "--timeout", "10"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    def start_worker(self, *extra: str, wait: bool = True) -> WorkerProcess:
        return self.start_process("worker", *extra, ready=" ready." if wait else None)

    def start_failure(self) -> tuple[WorkerProcess, list[str]]:
        """Start a worker that must refuse to start: wait for it to exit; its ``error:`` lines."""
        return self.failure(self.start_worker(wait=False))

    @staticmethod
    def failure(worker: WorkerProcess) -> tuple[WorkerProcess, list[str]]:
        """Wait for a worker that must refuse to start to exit; its ``error:`` lines."""
        try:
            worker.process.wait(timeout=60)
        finally:
            worker.kill()
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

    def start_api(self, *extra: str, **settings: str) -> tuple[WorkerProcess, str]:
        """``reseller-webhooks api`` on a free loopback port, without the subscribers' secrets
        (it never needs them); returns it and its base URL."""
        ready = "api on http://"
        api = self.start_process(
            "api", "--port", "0", *extra, ready=ready, settings=settings, with_secrets=False
        )
        line = next(line for line in api.log().splitlines() if line.startswith(ready))
        return api, line.split()[2]

    def start_process(
        self,
        command: str,
        *extra: str,
        ready: str | None,
        settings: dict[str, str] | None = None,
        with_secrets: bool = True,
        launcher: Sequence[str] = (),
    ) -> WorkerProcess:
        """``python -m reseller_webhooks.worker COMMAND EXTRA...``, run through ``launcher``
        (e.g. ``ip netns exec NAME``) when given; waits for ``ready`` in its log."""
        log_path = self.tmp_path / f"{command}-{len(self.workers)}.log"
        env = {**self.env, **(settings or {})}
        if not with_secrets:
            env = {k: v for k, v in env.items() if k not in self.secrets}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*launcher, sys.executable, "-m", "reseller_webhooks.worker", command, *extra],
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

    def kill_all(self) -> None:
        """End every process started here with SIGKILL: a test's teardown, where a graceful
        stop is not what is tested (the tests that test it call ``WorkerProcess.stop``)."""
        for process in self.workers:
            if process.process.poll() is None:
                process.process.kill()
        for process in self.workers:
            process.process.wait()


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


def attempt_log(client: redis.Redis, keys: Keys, delivery_id: str) -> list[dict[str, Any]]:
    return [json.loads(r) for r in client.lrange(keys.attempts(delivery_id), 0, -1)]


def audit_of(client: redis.Redis, keys: Keys) -> AuditReport:
    """``reseller-webhooks audit`` of the deployment in ``client``, in process."""
    store = Store(
        client, keys, record_retention_s=3600, dead_letter_retention_s=3600, attempt_log_size=10
    )
    return audit(store, dead_ttl_s=3600)


def assert_audit_balances(client: redis.Redis, keys: Keys) -> AuditReport:
    """Every event published is drained or pending, every delivery ended or open: what a
    chaos or failover test ends by asserting."""
    report = audit_of(client, keys)
    assert report.balanced, "\n".join(report.lines())
    return report


def person(tag: str) -> dict[str, Any]:
    """A user whose own values are found nowhere else."""
    token = secrets.token_hex(6)
    return {
        **sample_user(),
        "id": f"usr_{tag}{token}",
        "name": f"Name{token}",
        "firstName": f"First{token}",
        "lastName": f"Last{token}",
        "email": f"{tag}{token}@example.com",
    }


def own_values(user: dict[str, Any]) -> list[bytes]:
    return [user[f].encode() for f in ("id", "name", "firstName", "lastName", "email")]


def every_value(client: redis.Redis) -> list[bytes]:
    """Every key's name and every value it holds, whatever its type."""
    found: list[bytes] = []
    for key in client.scan_iter(count=1000):
        found.append(key)
        kind = client.type(key)
        if kind == b"string":
            found.append(client.get(key) or b"")
        elif kind == b"hash":
            found += [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == b"list":
            found += client.lrange(key, 0, -1)
        elif kind == b"set":
            found += list(client.smembers(key))
        elif kind == b"zset":
            found += client.zrange(key, 0, -1)
    return found
