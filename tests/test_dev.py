"""The README's first command: `reseller-webhooks dev` runs the whole product on its own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_until
from worker.cli import sample_user
from worker.redis_server import free_port

pytestmark = pytest.mark.slow


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dev_runs_redis_worker_flower_and_a_verifying_receiver(tmp_path: Path) -> None:
    redis_port, receiver_port, flower_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "WEBHOOKS_SUBSCRIBERS"}}
    env["PYTHONPATH"] = str(ROOT)
    log_path = tmp_path / "dev.log"
    with log_path.open("wb") as log:
        dev = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker",
                "dev",
                f"--redis-port={redis_port}",
                f"--receiver-port={receiver_port}",
                f"--flower-port={flower_port}",
            ],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    output = lambda: log_path.read_text(errors="replace")  # noqa: E731
    try:
        wait_until(
            lambda: " ready." in output() and port_open(flower_port), timeout_s=60, what="dev ready"
        )
        assert f"redis     redis://127.0.0.1:{redis_port}/0 (embedded)" in output()
        published = subprocess.run(
            [sys.executable, "-m", "worker", "publish", "reseller.user.created", "--sample"],
            env={**env, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        event_id = published.stdout.strip()
        wait_until(
            lambda: f"[receiver] reseller.user.created webhook-id={event_id} (verified" in output(),
            what="the sample receiver verified the delivery",
        )

        def flower_tasks() -> dict[str, dict[str, object]]:
            url = f"http://127.0.0.1:{flower_port}/api/tasks"
            with urllib.request.urlopen(url, timeout=5) as response:
                return dict(json.load(response))

        def delivered_shown() -> str | None:
            shown = json.dumps(flower_tasks())
            return shown if "'delivered': 1" in shown else None

        # Flower shows the triggers and what they did: which subscriber, how many delivered.
        shown = wait_until(delivered_shown, what="Flower shows the delivery task's result")
        assert "webhooks.dispatch" in shown
        assert "webhooks.deliver" in shown
        assert "'subscriber': 'sample-receiver'" in shown
        user = sample_user()
        for personal in (user["email"], user["firstName"], user["lastName"]):
            assert personal not in shown
    finally:
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=60) == 0
    assert "stopped" in output()
    assert not port_open(redis_port)
    assert not port_open(flower_port)
