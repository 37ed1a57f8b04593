"""The README's first command: `reseller-webhooks dev` runs the whole product on its own, and
stops all of it together."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from reseller_webhooks.worker.devserver.banner import publish_hint
from reseller_webhooks.worker.devserver.children import describe_exit
from reseller_webhooks.worker.devserver.redis_server import free_port
from reseller_webhooks.worker.devserver.sample_subscribers import failing_status
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.devserver.stack import Ports, busy_ports
from tests.helpers import ROOT, wait_until

BANNER = "reseller-webhooks dev is running:"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def dev_env() -> dict[str, str]:
    """The environment of a user's shell: dev runs from a folder of their own, not the
    repository (no PYTHONPATH to it), as an installed package."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "WEBHOOKS_SUBSCRIBERS"}}
    env.pop("PYTHONPATH", None)
    return env


@dataclass
class Dev:
    process: subprocess.Popen[bytes]
    log_path: Path
    redis_port: int
    receiver_port: int
    flower_port: int | None
    console_port: int | None
    metrics_port: int
    api_port: int | None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[tuple[int, str]]:
        """(pid, command line) of each process dev started (Linux /proc)."""
        pid = self.process.pid
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [
            (int(child), Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            for child in listed
        ]

    def ports(self) -> list[int]:
        ports = (
            self.redis_port,
            self.receiver_port,
            self.flower_port,
            self.console_port,
            self.metrics_port,
            self.api_port,
        )
        return [p for p in ports if p]


@pytest.fixture
def start_dev(tmp_path: Path) -> Iterator[Callable[..., Dev]]:
    started: list[Dev] = []

    def start(*extra: str, flower: bool = True, env: dict[str, str] | None = None) -> Dev:
        redis_port, receiver_port = free_port(), free_port()
        flower_port = free_port() if flower else None
        console_port = free_port() if flower else None  # the console goes with Flower
        metrics_port = free_port()
        api_port = free_port() if flower else None  # and so does the API
        log_path = tmp_path / f"dev-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reseller_webhooks.worker",
                    "dev",
                    f"--redis-port={redis_port}",
                    f"--receiver-port={receiver_port}",
                    f"--flower-port={flower_port}" if flower_port else "--no-flower",
                    f"--console-port={console_port}" if console_port else "--no-console",
                    f"--metrics-port={metrics_port}",
                    f"--api-port={api_port}" if api_port else "--no-api",
                    *extra,
                ],
                cwd=tmp_path,
                env=env or dev_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        dev = Dev(
            process,
            log_path,
            *(redis_port, receiver_port, flower_port, console_port, metrics_port, api_port),
        )
        started.append(dev)
        return dev

    yield start
    for dev in started:
        if dev.process.poll() is None:
            dev.process.kill()
            dev.process.wait()


@pytest.mark.slow
def test_dev_runs_redis_worker_flower_and_a_verifying_receiver(
    tmp_path: Path, start_dev: Callable[..., Dev]
) -> None:
    # Retries 20 times faster than dev's own schedule: its dead letter within a second.
    dev = start_dev(env={**dev_env(), "WEBHOOKS_SCHEDULE_SCALE": "0.05"})
    assert dev.flower_port is not None
    try:
        wait_until(lambda: BANNER in dev.output(), timeout_s=90, what="dev banner")
        out = dev.output()
        # The banner waits for the worker (and Flower) instead of preceding them.
        assert out.index(" ready.") < out.index(BANNER)
        assert port_open(dev.flower_port)
        assert f"console   http://127.0.0.1:{dev.console_port}" in out
        assert f"redis     redis://127.0.0.1:{dev.redis_port}/0 (embedded)" in out
        assert f"metrics   http://127.0.0.1:{dev.metrics_port}/metrics" in out
        # Every part the README's banner names is in the real one, in the same order.
        readme = (ROOT / "README.md").read_text()
        shown = readme.split(BANNER + "\n", 1)[1].split("Publish", 1)[0]
        labels = [line.split()[0] for line in shown.splitlines() if line.startswith("  ")]
        real = out.split(BANNER, 1)[1]
        parts = real.split("Publish", 1)[0]
        assert labels == [line.split()[0] for line in parts.splitlines() if line.startswith("  ")]
        assert "source .dev/env" in real

        # The publish hint works as printed, from a shell with no venv activated.
        hint = out.split("Publish a sample event from another terminal:\n", 1)[1].splitlines()[0]
        published = subprocess.run(
            hint.strip(),
            shell=True,
            cwd=tmp_path,
            env={**dev_env(), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert published.returncode == 0, f"{hint}\n{published.stderr}"
        event_id = published.stdout.strip()
        wait_until(
            lambda: (
                f"[receiver] /webhooks reseller.user.created webhook-id={event_id} (verified"
                in dev.output()
            ),
            what="the sample receiver verified the delivery",
        )

        def flower_tasks() -> dict[str, dict[str, object]]:
            url = f"http://127.0.0.1:{dev.flower_port}/api/tasks"
            with urllib.request.urlopen(url, timeout=5) as response:
                return dict(json.load(response))

        def delivered_shown() -> str | None:
            shown = json.dumps(flower_tasks())
            return shown if "'delivered': 1" in shown else None

        # Flower shows the triggers and what they did: how many events, which subscriber, how
        # many delivered.
        shown = wait_until(delivered_shown, what="Flower shows the delivery task's result")
        assert "webhooks.dispatch" in shown
        assert "'events': 1" in shown
        assert "webhooks.deliver" in shown
        assert "'subscriber': 'sample-receiver'" in shown
        user = sample_user()
        for personal in (user["email"], user["firstName"], user["lastName"]):
            assert personal not in shown

        # The console, on loopback without a login, shows the delivery.
        def console_shows_it() -> str | None:
            url = f"http://127.0.0.1:{dev.console_port}/subscribers/sample-receiver"
            with urllib.request.urlopen(url, timeout=5) as response:
                page = response.read().decode()
            return page if f"{event_id}:sample-receiver" in page else None

        page = wait_until(console_shows_it, what="the console shows the delivery")
        assert "100.0 % of 1" in page
        assert "HTTP 200" in page
        curl_publishes(tmp_path, dev, readme)
        failing_story(tmp_path, dev, event_id)
    finally:
        dev.process.send_signal(signal.SIGINT)
        assert dev.process.wait(timeout=60) == 0
    assert dev.output().rstrip().endswith("stopped")
    for port in dev.ports():
        assert not port_open(port), port


def curl_publishes(tmp_path: Path, dev: Dev, readme: str) -> None:
    """The curl the banner prints (the README's, but for the port) publishes through dev's
    ingest API, without a token, and the event arrives at the sample receiver, verified."""
    out = dev.output()
    assert f"  api       http://127.0.0.1:{dev.api_port}/v1/events" in out
    shown = out.split("or over HTTP, as a producer in any language does (answers its id):\n", 1)
    command = shown[1].splitlines()[0].strip()
    assert command.startswith("curl ")
    in_readme = readme.split("or over HTTP, as a producer", 1)[1].splitlines()[1].strip()
    assert in_readme == command.replace(f":{dev.api_port}/", ":8088/")
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and curl is not installed")
        return
    ran = subprocess.run(
        command,
        shell=True,
        cwd=tmp_path,
        env={**dev_env(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, f"{command}\n{ran.stderr}"
    event_id = json.loads(ran.stdout)["id"]
    assert event_id.startswith("msg_")
    wait_until(
        lambda: (
            f"[receiver] /webhooks reseller.user.created webhook-id={event_id} (verified"
            in dev.output()
        ),
        what="the event published with curl verified at the sample receiver",
    )


def failing_story(tmp_path: Path, dev: Dev, event_id: str) -> None:
    """The ``failing`` subscriber's first event: refused, retried, dead-lettered, and the
    operational events at ``sample-receiver``; the CLI finds it after ``source .dev/env``;
    the metrics (on loopback only) count it."""
    wait_until(
        lambda: "[receiver] /webhooks webhooks.delivery.dead " in dev.output(),
        what="the dead letter announced to sample-receiver",
    )
    out = dev.output()
    refused = f"[receiver] /failing reseller.user.created webhook-id={event_id} (verified"
    assert out.count(refused) == 4  # dev's schedule has four attempts
    assert "[receiver] /webhooks webhooks.subscriber.failing " in out
    assert (tmp_path / ".dev" / "env").stat().st_mode & 0o077 == 0
    cli = (
        "source .dev/env && reseller-webhooks dlq list && reseller-webhooks subscribers check"
        " && reseller-webhooks subscribers reload"
    )
    bin_dir = Path(sys.executable).parent
    ran = subprocess.run(
        ["bash", "-c", cli],
        cwd=tmp_path,
        env={**dev_env(), "PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert f"{event_id}:failing" in ran.stdout
    assert "sample-receiver" in ran.stdout
    assert ran.stdout.rstrip().endswith("2 subscriber(s) checked; workers told to reload")
    metrics_url = f"http://127.0.0.1:{dev.metrics_port}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        assert 'webhooks_dead_letters{subscriber="failing"} 1.0' in response.read().decode()
    for port in dev.ports():
        listening = {
            c.laddr.ip
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}, (port, listening)


@pytest.mark.slow
@pytest.mark.parametrize("service", ["redis", "receiver", "flower", "console", "api"])
def test_a_port_in_use_is_named_and_nothing_is_left_running(
    start_dev: Callable[..., Dev], service: str
) -> None:
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    try:
        dev = start_dev(f"--{service}-port={busy}")  # the later option wins
        assert dev.process.wait(timeout=60) == 2
        lines = dev.output().strip().splitlines()
        assert lines == [
            f"error: port {busy} ({service}) is already in use: stop what holds it or choose "
            f"another with --{service}-port"
        ]
        for port in dev.ports():
            if port != busy:
                assert not port_open(port), port
    finally:
        holder.close()


@pytest.mark.slow
def test_a_dying_worker_is_named_and_everything_stops(
    tmp_path: Path, start_dev: Callable[..., Dev]
) -> None:
    # With a subscribers file of the user's own, which dev uses as it is.
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "allow_private_networks: true\nsubscribers:\n"
        "  - {id: my-crm, url: 'http://127.0.0.1:9/hooks', events: ['*'], secret_env: MY_SECRET}\n"
    )
    secret = "whsec_" + "A" * 43 + "="
    env = {**dev_env(), "WEBHOOKS_SUBSCRIBERS": str(mine), "MY_SECRET": secret}
    dev = start_dev(flower=False, env=env)
    wait_until(lambda: BANNER in dev.output(), timeout_s=90, what="dev banner")
    assert "  subscribers mine.yaml (yours)" in dev.output()  # relative to where dev runs
    assert not (tmp_path / ".dev" / "subscribers.yaml").exists()
    assert f"WEBHOOKS_SUBSCRIBERS={mine}" in (tmp_path / ".dev" / "env").read_text()
    workers = [
        pid for pid, cmd in dev.children() if cmd.endswith("-m reseller_webhooks.worker worker ")
    ]
    assert len(workers) == 1, dev.children()
    os.kill(workers[0], signal.SIGKILL)
    assert dev.process.wait(timeout=60) == 1
    out = dev.output()
    assert "error: the worker was killed by SIGKILL; stopping everything" in out
    assert out.rstrip().endswith("stopped")
    for port in dev.ports():
        assert not port_open(port), port


@pytest.mark.slow
def test_a_worker_that_cannot_start_is_named_and_no_banner_is_shown(
    start_dev: Callable[..., Dev],
) -> None:
    # dev accepts the setting (a core number); the worker refuses a core it may not run on.
    dev = start_dev(flower=False, env={**dev_env(), "WEBHOOKS_CPU_AFFINITY": "4096"})
    assert dev.process.wait(timeout=90) == 1
    out = dev.output()
    assert "error: the worker exited with code 2; stopping everything" in out
    assert BANNER not in out
    for port in dev.ports():
        assert not port_open(port), port


@pytest.mark.parametrize(
    ("free", "expected"),
    [
        ({6399, 8090, 5555}, None),
        (
            {6399, 5555},
            "port 8090 (receiver) is already in use: stop what holds it or choose another "
            "with --receiver-port",
        ),
        (
            set(),
            "port 6399 (redis) is already in use: stop what holds it or choose another with "
            "--redis-port; port 8090 (receiver) is already in use: stop what holds it or choose "
            "another with --receiver-port; port 5555 (flower) is already in use: stop what holds "
            "it or choose another with --flower-port",
        ),
    ],
)
def test_busy_ports(free: set[int], expected: str | None) -> None:
    ports = {"redis": 6399, "receiver": 8090, "flower": 5555}
    assert busy_ports(ports, is_free=lambda port: port in free) == expected


@pytest.mark.parametrize(
    ("redis_url", "script", "cwd", "expected"),
    [
        (
            "redis://127.0.0.1:6399/0",
            "/srv/app/.venv/bin/reseller-webhooks",
            "/srv/app",
            "REDIS_URL=redis://127.0.0.1:6399/0 .venv/bin/reseller-webhooks publish "
            "reseller.user.created --sample",
        ),
        (
            "redis://127.0.0.1:6399/0",
            "/home/ops/venv/bin/reseller-webhooks",
            "/srv/app",
            "REDIS_URL=redis://127.0.0.1:6399/0 /home/ops/venv/bin/reseller-webhooks publish "
            "reseller.user.created --sample",
        ),
        (
            None,  # the URL holds a password: it is not printed
            "/srv/my app/bin/reseller-webhooks",
            "/srv/my app/bin",
            "./reseller-webhooks publish reseller.user.created --sample",
        ),
        (
            None,
            "/home/ops/my venv/bin/reseller-webhooks",
            "/srv",
            "'/home/ops/my venv/bin/reseller-webhooks' publish reseller.user.created --sample",
        ),
    ],
)
def test_publish_hint(redis_url: str | None, script: str, cwd: str, expected: str) -> None:
    assert publish_hint(redis_url, Path(script), Path(cwd)) == expected


def test_publish_hint_without_the_script_runs_the_module() -> None:
    hint = publish_hint("redis://127.0.0.1:1/0", None, Path("/"))
    assert hint.endswith(" -m reseller_webhooks.worker publish reseller.user.created --sample")
    assert sys.executable in hint


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, "flower exited with code 0"),
        (2, "flower exited with code 2"),
        (-9, "flower was killed by SIGKILL"),
        (-15, "flower was killed by SIGTERM"),
    ],
)
def test_describe_exit(code: int, expected: str) -> None:
    assert describe_exit("flower", code) == expected


@pytest.mark.parametrize(
    ("ports", "embedded", "checked"),
    [
        (Ports(6399, 8090, 5555, 5556, 9464), True, [6399, 8090, 5555, 5556, 9464]),
        (Ports(6399, 8090, None, None, 9464), False, [8090, 9464]),
        (Ports(6399, 8090, 5555, 5556, None), True, [6399, 8090, 5555, 5556]),
        (Ports(6399, 8090, None, None, 9464, 8088), True, [6399, 8090, 9464, 8088]),
    ],
)
def test_every_port_dev_listens_on_is_checked(
    ports: Ports, embedded: bool, checked: list[int]
) -> None:
    assert list(ports.to_check(embedded_redis=embedded).values()) == checked
    if ports.metrics:
        assert "with --metrics-port" in (busy_ports({"metrics": 9464}, lambda _: False) or "")
    if ports.api:
        assert "(api) is already in use" in (busy_ports({"api": 8088}, lambda _: False) or "")


@pytest.mark.parametrize(
    ("event_number", "attempt", "status"),
    [(1, 1, 503), (1, 2, 503), (1, 4, 503), (2, 1, 503), (2, 2, 200), (3, 3, 503), (4, 2, 200)],
)
def test_the_failing_sample_subscriber(event_number: int, attempt: int, status: int) -> None:
    assert failing_status(event_number, attempt) == status
