"""compose.yaml, rendered with the documented .env and checked, and its parts run for real.

There is no container engine here, so the file is rendered by a small interpolator (compose's
``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``) and checked as data; where the
``docker compose`` plugin exists, it validates the file too. The Redis arguments, the worker's
healthcheck and Flower's healthcheck and login run against real processes.
"""

from __future__ import annotations

import importlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import httpx
import pytest
import redis
import yaml
from dotenv import dotenv_values
from pydantic import SecretStr

from reseller_webhooks.producers.connection import redis_target
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.worker.api.app import refusal as api_refusal
from reseller_webhooks.worker.api.tokens import parse_tokens
from reseller_webhooks.worker.cli.commands import main
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.console.auth import Credentials, credentials, refusal
from reseller_webhooks.worker.devserver.redis_server import find_redis_server, free_port
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import ROOT, Deployment, wait_until

COMPOSE_FILE = ROOT / "compose.yaml"
DOTENV_EXAMPLE = ROOT / ".env.example"
SECRETS_EXAMPLE = ROOT / "subscribers.env.example"
EXAMPLE_SUBSCRIBERS = ROOT / "worker" / "devserver" / "examples" / "subscribers.yaml"
VARIABLE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$\$"
)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """One string as compose interpolates it."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in {"?", ":?"} and missing:
            raise InterpolationError(f"{name}: {arg}")
        if op in {"-", ":-"} and missing:
            return str(arg)
        return value or ""

    return VARIABLE.sub(replace, text)


def render_values(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [render_values(item, env) for item in node]
    if isinstance(node, dict):
        return {key: render_values(value, env) for key, value in node.items()}
    return node


def render(env: dict[str, str]) -> dict[str, Any]:
    return dict(render_values(yaml.safe_load(COMPOSE_FILE.read_text()), env))


def referenced_variables() -> set[str]:
    return {m.group("name") for m in VARIABLE.finditer(COMPOSE_FILE.read_text()) if m["name"]}


def documented_env() -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(DOTENV_EXAMPLE).items()}


def subscriber_secret_names() -> set[str]:
    config = yaml.safe_load(EXAMPLE_SUBSCRIBERS.read_text())
    return {
        sub[key]
        for sub in config["subscribers"]
        for key in ("secret_env", "previous_secret_env")
        if key in sub
    }


PASSWORD = "pw-" + secrets.token_hex(12)
FLOWER_LOGIN = "ops:fl-" + secrets.token_hex(12)
CONSOLE_PASSWORD = "co-" + secrets.token_hex(12)
API_TOKEN = "api-" + secrets.token_hex(16)
ENV = {
    **documented_env(),
    "REDIS_PASSWORD": PASSWORD,
    "FLOWER_BASIC_AUTH": FLOWER_LOGIN,
    "WEBHOOKS_CONSOLE_USER": "oncall",
    "WEBHOOKS_CONSOLE_PASSWORD": CONSOLE_PASSWORD,
    "WEBHOOKS_API_TOKENS": f"shop:{API_TOKEN}",
}
COMPOSE = render(ENV)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
#: The services that talk to Redis (through the Sentinels with the Sentinel lines).
REDIS_CLIENTS = ("worker", "flower", "console", "api")


def command(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    return cmd if isinstance(cmd, list) else cmd.split()


def healthcheck_shell(service: str) -> str:
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", test
    return str(test[1])


def size_bytes(value: str) -> int:
    """``1gb`` (Redis) or ``1536m`` (compose) in bytes; both count in powers of 1024."""
    match = re.fullmatch(r"(\d+)([kmg]?)b?", value.lower())
    assert match, value
    return int(match[1]) * 1024 ** " kmg".index(match[2] or " ")


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A:?need A}", {"A": "x"}, "x"),
        ("$$HOSTNAME", {}, "$HOSTNAME"),
        ("redis://:${P}@redis", {"P": "s"}, "redis://:s@redis"),
    ],
)
def test_interpolate(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


@pytest.mark.parametrize(
    "missing",
    [
        "REDIS_PASSWORD",
        "FLOWER_BASIC_AUTH",
        "WEBHOOKS_CONSOLE_USER",
        "WEBHOOKS_CONSOLE_PASSWORD",
        "WEBHOOKS_API_TOKENS",
    ],
)
def test_required_settings_stop_the_rendering_by_name(missing: str) -> None:
    with pytest.raises(InterpolationError, match=f"^{missing}: set {missing}"):
        render({**ENV, missing: ""})


def test_every_variable_is_documented_in_the_env_example() -> None:
    assert referenced_variables() == set(documented_env())


def test_redis_is_durable_bounded_and_never_evicts() -> None:
    cmd = " ".join(command("redis"))
    assert "--appendonly yes" in cmd
    assert "--appendfsync everysec" in cmd
    assert "--maxmemory-policy noeviction" in cmd
    maxmemory = command("redis")[command("redis").index("--maxmemory") + 1]
    assert maxmemory == documented_env()["REDIS_MAXMEMORY"] == "1gb"
    limit = SERVICES["redis"]["deploy"]["resources"]["limits"]["memory"]
    assert size_bytes(limit) >= 1.25 * size_bytes(maxmemory)  # room for an AOF rewrite's fork
    assert SERVICES["redis"]["volumes"] == ["redis-data:/data"]


def test_redis_password_is_never_on_a_command_line() -> None:
    for name, service in SERVICES.items():
        for part in ("command", "entrypoint", "healthcheck"):
            shown = repr(service.get(part))
            assert PASSWORD not in shown, f"{name} {part}"
            assert FLOWER_LOGIN not in shown, f"{name} {part}"
            assert CONSOLE_PASSWORD not in shown, f"{name} {part}"
            assert API_TOKEN not in shown, f"{name} {part}"
    auth = COMPOSE["configs"]["redis-auth"]["content"]
    assert auth.split("\n") == [f"requirepass {PASSWORD}", f"masterauth {PASSWORD}", ""]
    for name in ("redis", "redis-replica"):
        mounted = SERVICES[name]["configs"][0]
        assert mounted["source"] == "redis-auth"
        assert mounted["target"] in command(name)


def test_workers_flower_and_the_console_reach_redis_with_the_password() -> None:
    for name in REDIS_CLIENTS:
        assert SERVICES[name]["environment"]["REDIS_URL"] == f"redis://:{PASSWORD}@redis:6379/0"
    assert SERVICES["redis"]["environment"]["REDISCLI_AUTH"] == PASSWORD
    for name in REDIS_CLIENTS:
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_variable_a_service_reads_is_provided() -> None:
    worker = SERVICES["worker"]
    # The worker: the broker, the subscribers file (mounted), and every secret the file names,
    # through subscribers.env, whose example lists those of the example subscribers file.
    assert {"REDIS_URL", "WEBHOOKS_SUBSCRIBERS"} <= set(worker["environment"])
    mount = f"./subscribers.yaml:{worker['environment']['WEBHOOKS_SUBSCRIBERS']}:ro"
    assert mount in worker["volumes"]
    assert worker["env_file"] == ["subscribers.env"]
    assert subscriber_secret_names() <= set(dotenv_values(SECRETS_EXAMPLE))
    # Flower: the broker and its login, from the environment.
    assert set(SERVICES["flower"]["environment"]) == {
        "REDIS_URL",
        "WEBHOOKS_SENTINEL_MASTER",
        "FLOWER_BASIC_AUTH",
    }
    assert SERVICES["flower"]["environment"]["FLOWER_BASIC_AUTH"] == FLOWER_LOGIN
    # Redis: the password of its healthcheck's redis-cli.
    assert set(SERVICES["redis"]["environment"]) == {"REDISCLI_AUTH"}
    # The console: the broker, the subscribers file (the same mount) and its own login.
    console = SERVICES["console"]
    assert (
        console["environment"]["WEBHOOKS_SUBSCRIBERS"]
        == (worker["environment"]["WEBHOOKS_SUBSCRIBERS"])
    )
    assert console["volumes"] == [mount]
    assert console["environment"]["WEBHOOKS_CONSOLE_USER"] == "oncall"
    assert console["environment"]["WEBHOOKS_CONSOLE_PASSWORD"] == CONSOLE_PASSWORD


def test_the_console_gets_no_subscriber_secrets_and_needs_its_login() -> None:
    console = SERVICES["console"]
    assert "env_file" not in console
    secret_names = subscriber_secret_names() | set(dotenv_values(SECRETS_EXAMPLE))
    assert not secret_names & set(console["environment"])
    assert console["ports"] == ["127.0.0.1:5556:5556"]
    cmd = command("console")
    assert cmd[:2] == ["reseller-webhooks", "console"]
    host = cmd[cmd.index("--host") + 1]
    settings = WorkerSettings(
        **{
            k.removeprefix("WEBHOOKS_").lower(): v
            for k, v in console["environment"].items()
            if k.startswith("WEBHOOKS_CONSOLE_")
        }
    )
    assert refusal(host, credentials(settings)) is None  # the login it gets is enough
    assert refusal(host, Credentials()) is not None  # and without one it would not start
    assert not settings.console_read_only


def test_the_api_gets_no_subscriber_secrets_and_needs_its_tokens() -> None:
    api = SERVICES["api"]
    assert "env_file" not in api
    assert "volumes" not in api  # not even the subscribers file
    assert set(api["environment"]) == {
        "REDIS_URL",
        "WEBHOOKS_SENTINEL_MASTER",
        "WEBHOOKS_API_TOKENS",
    }
    assert api["ports"] == ["127.0.0.1:8088:8088"]
    cmd = command("api")
    assert cmd[:2] == ["reseller-webhooks", "api"]
    host = cmd[cmd.index("--host") + 1]
    tokens = parse_tokens(SecretStr(api["environment"]["WEBHOOKS_API_TOKENS"]))
    assert tokens.identify(f"Bearer {API_TOKEN}") == "shop"
    assert api_refusal(host, tokens) is None  # the tokens it gets are enough
    assert api_refusal(host, parse_tokens(None)) is not None  # and without them it would not start


def test_flower_gets_no_subscriber_secrets() -> None:
    flower = SERVICES["flower"]
    assert "env_file" not in flower
    secret_names = subscriber_secret_names() | set(dotenv_values(SECRETS_EXAMPLE))
    assert not secret_names & set(flower["environment"])
    assert not any("secret" in key.lower() for key in flower["environment"])
    assert not any(arg.startswith("--basic-auth") for arg in command("flower"))
    assert flower["ports"] == ["127.0.0.1:5555:5555"]


# -- the sentinel profile ---------------------------------------------------------------------

SENTINEL_PROFILE = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}


def sentinel_lines() -> dict[str, str]:
    """The .env lines compose.yaml's header tells to set for going through the Sentinels."""
    header = COMPOSE_FILE.read_text().split("\nname:", 1)[0]
    found = re.findall(r"^#   ([A-Z_]+)=(\S+)$", header, flags=re.MULTILINE)
    return dict(found)


SENTINEL_ENV = {**ENV, **sentinel_lines()}
SENTINEL_COMPOSE = render(SENTINEL_ENV)


def sentinel_config(compose: dict[str, Any]) -> list[list[str]]:
    return [line.split() for line in compose["configs"]["sentinel"]["content"].splitlines()]


def test_the_sentinel_profile_starts_only_when_asked_for() -> None:
    by_default = {name for name, service in SERVICES.items() if not service.get("profiles")}
    assert by_default == {"redis", "worker", "flower", "console", "api"}
    assert {n for n, s in SERVICES.items() if s.get("profiles") == ["sentinel"]} == SENTINEL_PROFILE
    assert set(SERVICES) - by_default == SENTINEL_PROFILE | {"prometheus"}
    for name in SENTINEL_PROFILE:
        assert SERVICES[name]["profiles"] == ["sentinel"], name
    # Without the Sentinel lines, nothing outside the profile depends on it.
    for name in by_default:
        assert not set(SERVICES[name].get("depends_on", {})) & SENTINEL_PROFILE, name


def test_the_replica_follows_the_master_with_the_password_from_its_config() -> None:
    cmd = command("redis-replica")
    assert cmd[cmd.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert "--masterauth" not in cmd
    assert "--requirepass" not in cmd
    # Durable and bounded like the master, which it replaces after a failover.
    shared = ("--appendonly", "--appendfsync", "--maxmemory", "--maxmemory-policy")
    for option in shared:
        master, replica = command("redis"), command("redis-replica")
        assert replica[replica.index(option) + 1] == master[master.index(option) + 1], option
    assert SERVICES["redis-replica"]["volumes"] == ["redis-replica-data:/data"]


def test_the_documented_lines_take_workers_and_flower_through_the_sentinels() -> None:
    assert set(sentinel_lines()) == {"REDIS_SCHEME", "REDIS_HOSTS", "WEBHOOKS_SENTINEL_MASTER"}
    # The .env example documents the same three lines.
    example = DOTENV_EXAMPLE.read_text()
    for name, value in sentinel_lines().items():
        assert f"#   {name}={value}\n" in example, name
    services = SENTINEL_COMPOSE["services"]
    config = sentinel_config(SENTINEL_COMPOSE)
    monitors = [line for line in config if line[:2] == ["sentinel", "monitor"]]
    assert len(monitors) == 1
    _, _, master, host, port, quorum = monitors[0]
    assert (host, port, quorum) == ("redis", "6379", "2")
    assert ["sentinel", "auth-pass", master, PASSWORD] in config
    down_after = next(line for line in config if line[1] == "down-after-milliseconds")
    assert down_after[2] == master
    assert 1000 <= int(down_after[3]) <= 30000
    sentinels = sorted(name for name in services if name.startswith("sentinel-"))
    assert len(sentinels) == 3
    assert int(quorum) == len(sentinels) // 2 + 1
    for name in REDIS_CLIENTS:
        env = services[name]["environment"]
        target = redis_target(
            ProducerSettings(
                redis_url=env["REDIS_URL"], sentinel_master=env["WEBHOOKS_SENTINEL_MASTER"]
            )
        )
        assert target.scheme == "sentinel"
        assert target.master == master == sentinel_lines()["WEBHOOKS_SENTINEL_MASTER"]
        assert target.sentinels == tuple((s, 26379) for s in sentinels)
        assert target.password == PASSWORD
        assert target.db == 0
    for name in sentinels:
        assert services[name]["configs"] == [
            {"source": "sentinel", "target": "/usr/local/etc/redis/sentinel.conf"}
        ]
        assert "/usr/local/etc/redis/sentinel.conf" in " ".join(command(name))


def test_without_the_sentinel_lines_nothing_goes_through_sentinels() -> None:
    for name in REDIS_CLIENTS:
        env = SERVICES[name]["environment"]
        target = redis_target(
            ProducerSettings(
                redis_url=env["REDIS_URL"], sentinel_master=env["WEBHOOKS_SENTINEL_MASTER"]
            )
        )
        assert (target.scheme, target.master) == ("redis", None)
        assert urlsplit(target.url).password == PASSWORD
        assert urlsplit(target.url).hostname == "redis"
    # The Sentinels of the profile still watch a master of a known name.
    monitor = next(line for line in sentinel_config(COMPOSE) if line[1] == "monitor")
    assert monitor[2] == "webhooks"


def test_no_password_on_a_command_line_with_the_sentinel_lines() -> None:
    for name, service in SENTINEL_COMPOSE["services"].items():
        for part in ("command", "entrypoint", "healthcheck"):
            assert PASSWORD not in repr(service.get(part)), f"{name} {part}"


def test_every_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        assert service["healthcheck"]["test"], name


def test_every_project_command_exists() -> None:
    for name, service in SERVICES.items():
        cmd = command(name)
        if cmd[0] == "reseller-webhooks":
            sub = main.commands.get(cmd[1])
            assert isinstance(sub, click.Command), f"{name}: no subcommand {cmd[1]!r}"
        elif cmd[0] == "celery":
            app_module = cmd[cmd.index("-A") + 1]
            module = importlib.import_module(app_module)
            assert hasattr(module, "app"), f"{name}: {app_module} has no Celery app"
        elif name == "prometheus":
            assert cmd[0].startswith("--config.file="), cmd  # options to the image's entrypoint
        else:  # Redis, its replica and the Sentinels run the Redis image's own programs
            assert service["image"].startswith("redis:"), f"{name}: unexpected command {cmd}"
        assert service.get("image") or service.get("build"), name
    assert (ROOT / "Dockerfile").exists()


def test_prometheus_profile_scrapes_every_worker_with_the_alert_rules() -> None:
    prometheus = SERVICES["prometheus"]
    # Only with `--profile prometheus`: a plain `docker compose up` starts what it did before.
    assert prometheus["profiles"] == ["prometheus"]
    assert [n for n, s in SERVICES.items() if s.get("profiles") == ["prometheus"]] == ["prometheus"]
    config_path = next(a for a in command("prometheus") if a.startswith("--config.file="))
    mounts = {}
    for volume in prometheus["volumes"]:
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            assert mode == ["ro"], volume
            assert (ROOT / source).is_file(), volume
            mounts[target] = ROOT / source
    config_file = mounts[config_path.partition("=")[2]]
    config = yaml.safe_load(config_file.read_text())
    # The rules file the config names is the alerts file, mounted beside it.
    for rule_file in config["rule_files"]:
        mounted = mounts[str(Path(config_path.partition("=")[2]).parent / rule_file)]
        assert mounted == ROOT / "ops" / "prometheus" / "alerts.yml"
    # It scrapes the worker service's replicas on the port the workers serve /metrics on, which
    # the workers expose to the compose network and publish nowhere.
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "reseller-webhooks"  # the alert rules select this job
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"]
    worker = SERVICES["worker"]
    port = worker["environment"]["WEBHOOKS_METRICS_PORT"]
    assert str(sd["port"]) == port
    # Workers listen on loopback unless told: compose opens /metrics to its own network.
    assert worker["environment"]["WEBHOOKS_METRICS_HOST"] == "0.0.0.0"
    assert worker["expose"] == [port]
    assert "ports" not in worker
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]
    assert "env_file" not in prometheus  # no subscriber secrets


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"]).returncode != 0:
        pytest.skip("no docker compose plugin on this machine")
    for name in ("compose.yaml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in ENV.items()))
    shutil.copy(SECRETS_EXAMPLE, tmp_path / "subscribers.env")
    shutil.copy(EXAMPLE_SUBSCRIBERS, tmp_path / "subscribers.yaml")
    checked = subprocess.run(
        [docker, "compose", "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


# -- the parts, run for real -------------------------------------------------------------------


@pytest.mark.slow
def test_redis_runs_with_the_compose_arguments(tmp_path: Path) -> None:
    """The same arguments and auth config on a local redis-server: a password is required,
    maxmemory and noeviction are in force, and the healthcheck passes only with the password."""
    try:
        binary = find_redis_server(os.environ.get("REDIS_SERVER"))
    except Exception as exc:
        pytest.skip(f"no redis-server: {exc}")
    cmd = command("redis")
    conf = tmp_path / "auth.conf"
    conf.write_text(COMPOSE["configs"]["redis-auth"]["content"])
    args = [str(conf) if a == SERVICES["redis"]["configs"][0]["target"] else a for a in cmd[1:]]
    port = free_port()
    local = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""]
    server = subprocess.Popen([binary, *args, *local], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=PASSWORD)
    try:
        wait_until(lambda: _pings(client), what="redis with the compose arguments")
        anonymous = redis.Redis(port=port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        assert client.config_get("maxmemory")["maxmemory"] == str(1024**3)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.config_get("appendfsync")["appendfsync"] == "everysec"
        cli_dir = str(Path(binary).parent)
        probe = healthcheck_shell("redis").replace("redis-cli", f"redis-cli -p {port}", 1)
        path = f"{cli_dir}:{os.environ.get('PATH', '')}"
        ok = subprocess.run(["sh", "-c", probe], env={"PATH": path, "REDISCLI_AUTH": PASSWORD})
        assert ok.returncode == 0
        refused = subprocess.run(["sh", "-c", probe], env={"PATH": path}, capture_output=True)
        assert refused.returncode != 0
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.mark.slow
def test_worker_healthcheck_pings_its_own_node(deployment: Deployment) -> None:
    cmd = command("worker")
    assert cmd[:2] == ["reseller-webhooks", "worker"]
    worker = deployment.start_worker(*cmd[2:])
    probe = healthcheck_shell("worker")
    env = {
        **deployment.env,
        "HOSTNAME": socket.gethostname(),  # set in every container; %h is the same name
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    healthy = subprocess.run(["sh", "-c", probe], env=env, capture_output=True, text=True)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    worker.stop()
    gone = subprocess.run(["sh", "-c", probe], env=env, capture_output=True, text=True)
    assert gone.returncode != 0


@pytest.mark.slow
def test_flower_healthcheck_and_login_from_the_environment(redis_url: str) -> None:
    cmd = command("flower")
    assert "--port=5555" in cmd
    probe = SERVICES["flower"]["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "python", "-c"]
    assert "http://127.0.0.1:5555/healthcheck" in probe[3]
    port = free_port()  # 5555 may be taken on a shared machine: the same service elsewhere
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        **{k: v for k, v in SERVICES["flower"]["environment"].items() if k != "REDIS_URL"},
    }
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", *cmd[1:-1], f"--port={port}", "--address=127.0.0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    check = probe[3].replace(":5555/", f":{port}/")
    try:
        wait_until(
            lambda: (
                subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0
                or flower.poll() is not None
            ),
            timeout_s=60,
            what="Flower's healthcheck passes",
        )
        assert flower.poll() is None
        api = f"http://127.0.0.1:{port}/api/workers"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(api, timeout=5)
        assert refused.value.code == 401
        refused.value.close()
        login = b64encode(FLOWER_LOGIN.encode()).decode()
        request = urllib.request.Request(api, headers={"Authorization": f"Basic {login}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
    finally:
        flower.terminate()
        flower.wait(timeout=20)


@pytest.mark.slow
def test_the_sentinel_profile_runs_and_fails_over(tmp_path: Path) -> None:
    """The profile's arguments and configs on local processes (names replaced by loopback
    ports): the replica syncs with the password of its config, the three Sentinels find it and
    each other, and a master that stops answering is replaced by the replica."""
    try:
        binary = find_redis_server(os.environ.get("REDIS_SERVER"))
    except Exception as exc:
        pytest.skip(f"no redis-server: {exc}")
    env = {**SENTINEL_ENV, "REDIS_MAXMEMORY": "64mb"}
    compose = render(env)
    services = compose["services"]
    master = sentinel_lines()["WEBHOOKS_SENTINEL_MASTER"]
    ports = {name: free_port() for name in ("redis", "redis-replica")}
    processes: list[subprocess.Popen[bytes]] = []
    clients: list[redis.Redis] = []

    def start(args: list[str], directory: Path) -> None:
        directory.mkdir()
        processes.append(
            subprocess.Popen(
                [binary, *args, "--dir", str(directory), "--bind", "127.0.0.1", "--save", ""],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def client(port: int, **kwargs: Any) -> redis.Redis:
        clients.append(redis.Redis(port=port, socket_timeout=5, **kwargs))
        return clients[-1]

    try:
        auth = tmp_path / "auth.conf"
        auth.write_text(compose["configs"]["redis-auth"]["content"])
        for name in ("redis", "redis-replica"):
            target = services[name]["configs"][0]["target"]
            args = [str(auth) if a == target else a for a in services[name]["command"][1:]]
            if "--replicaof" in args:
                at = args.index("--replicaof")
                args[at + 1 : at + 3] = ["127.0.0.1", str(ports["redis"])]
            start([*args, "--port", str(ports[name])], tmp_path / name)
        replica = client(ports["redis-replica"], password=PASSWORD)
        wait_until(
            lambda: (
                _pings(replica) and replica.info("replication").get("master_link_status") == "up"
            ),
            timeout_s=30,
            what="the replica synced with the password of its config",
        )
        content = compose["configs"]["sentinel"]["content"].replace(
            "redis 6379", f"127.0.0.1 {ports['redis']}"
        )
        sentinels = []
        for number in (1, 2, 3):
            port = free_port()
            conf = tmp_path / f"sentinel-{number}.conf"  # Sentinel rewrites its config file
            conf.write_text(content.replace("port 26379", f"port {port}"))
            processes.append(
                subprocess.Popen(
                    [binary, str(conf), "--sentinel", "--bind", "127.0.0.1"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=tmp_path,
                )
            )
            sentinels.append(client(port, decode_responses=True))

        def knows_everything(sentinel: redis.Redis) -> bool:
            try:
                state = sentinel.sentinel_master(master)
            except redis.RedisError:
                return False
            return bool(
                state["num-slaves"] == 1
                and state["num-other-sentinels"] == 2
                and state["quorum"] == 2
                and state["is_master"]
                and not state["is_odown"]
            )

        wait_until(
            lambda: all(knows_everything(s) for s in sentinels),
            timeout_s=60,
            what="three Sentinels that know the master, its replica and each other",
        )
        processes[0].send_signal(signal.SIGSTOP)  # the master stops answering
        wait_until(
            lambda: (
                sentinels[0].sentinel_get_master_addr_by_name(master)
                == ("127.0.0.1", ports["redis-replica"])
            ),
            timeout_s=60,
            what="the replica promoted",
        )
        assert replica.info("replication")["role"] == "master"
        processes[0].send_signal(signal.SIGCONT)
    finally:
        for c in clients:
            c.close()
        for process in processes:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.slow
def test_the_console_runs_with_the_compose_settings(deployment: Deployment) -> None:
    """The compose command and environment on a local process (the address and port replaced
    by loopback ones): its healthcheck passes, pages need the login, and the login works."""
    deployment.subscriber("acme-crm", "http://127.0.0.1:9/hook")
    cmd = command("console")
    probe = SERVICES["console"]["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "python", "-c"]
    args = cmd[2:]
    args[args.index("--host") + 1] = "127.0.0.1"
    del args[args.index("--port") : args.index("--port") + 2]
    settings = {
        k: v
        for k, v in SERVICES["console"]["environment"].items()
        if k not in {"REDIS_URL", "WEBHOOKS_SUBSCRIBERS", "WEBHOOKS_SENTINEL_MASTER"}
    }
    console, url = deployment.start_console(*args, **settings)
    check = probe[3].replace("http://127.0.0.1:5556/", f"{url}/")
    assert subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/subscribers").status_code == 302  # to the login page
        login = client.get("/login")
        xsrf = client.cookies["_xsrf"]
        assert login.status_code == 200
        done = client.post(
            "/login",
            data={"_xsrf": xsrf, "user": "oncall", "password": CONSOLE_PASSWORD},
        )
        assert done.status_code == 302
        page = client.get("/subscribers")
        assert page.status_code == 200
        assert "acme-crm" in page.text
    console.stop()
    assert CONSOLE_PASSWORD not in console.log()


@pytest.mark.slow
def test_the_api_runs_with_the_compose_settings(deployment: Deployment) -> None:
    """The compose command and environment on a local process (the address and port replaced
    by loopback ones): its healthcheck passes, publishing needs a token of .env, and the token
    is never logged."""
    probe = SERVICES["api"]["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "python", "-c"]
    args = command("api")[2:]
    args[args.index("--host") + 1] = "127.0.0.1"
    del args[args.index("--port") : args.index("--port") + 2]
    settings = {"WEBHOOKS_API_TOKENS": SERVICES["api"]["environment"]["WEBHOOKS_API_TOKENS"]}
    api, url = deployment.start_api(*args, **settings)
    check = probe[3].replace("http://127.0.0.1:8088/", f"{url}/")
    assert subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0
    event = {"event": "reseller.user.created", "data": sample_user()}
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/v1/events", json=event).status_code == 401
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        assert client.post("/v1/events", json=event, headers=headers).status_code == 202
        assert client.post("/v1/events", json={}, headers=headers).status_code == 422
    api.stop()
    assert "422 POST /v1/events producer=shop" in api.log()
    assert API_TOKEN not in api.log()
