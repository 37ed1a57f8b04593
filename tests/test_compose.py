"""compose.yaml cannot run here (no container engine), so check it statically."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
import yaml

from producers.connection import redis_target
from producers.settings import ProducerSettings
from worker.cli import main

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def command(service: str) -> list[str]:
    cmd = COMPOSE["services"][service]["command"]
    return cmd if isinstance(cmd, list) else cmd.split()


def test_redis_is_durable_and_never_evicts() -> None:
    cmd = " ".join(command("redis"))
    assert "--appendonly yes" in cmd
    assert "--appendfsync everysec" in cmd
    assert "--maxmemory-policy noeviction" in cmd
    assert COMPOSE["services"]["redis"]["volumes"] == ["redis-data:/data"]


def test_every_project_command_exists() -> None:
    for name, service in COMPOSE["services"].items():
        cmd = command(name)
        if cmd[0] == "reseller-webhooks":
            sub = main.commands.get(cmd[1])
            assert isinstance(sub, click.Command), f"{name}: no subcommand {cmd[1]!r}"
        elif cmd[0] == "celery":
            app_module = cmd[cmd.index("-A") + 1]
            module = importlib.import_module(app_module)
            assert hasattr(module, "app"), f"{name}: {app_module} has no Celery app"
            assert importlib.util.find_spec(cmd[cmd.index("-A") + 2]) is not None
        elif cmd[0] == "sh":
            assert name.startswith("sentinel-"), f"{name}: unexpected shell command"
        else:
            assert name in ("redis", "redis-replica"), f"{name}: unexpected command {cmd}"
        assert service.get("image") or service.get("build"), name


def test_workers_get_config_and_secrets_from_environment() -> None:
    worker: dict[str, Any] = COMPOSE["services"]["worker"]
    env = worker["environment"]
    assert env["REDIS_URL"] == "${REDIS_URL:-redis://redis:6379/0}"
    assert env["WEBHOOKS_SENTINEL_MASTER"] == "${WEBHOOKS_SENTINEL_MASTER:-}"
    assert env["WEBHOOKS_SUBSCRIBERS"] == "/config/subscribers.yaml"
    assert env["ACME_WEBHOOK_SECRET"].startswith("${ACME_WEBHOOK_SECRET")
    assert "./subscribers.yaml:/config/subscribers.yaml:ro" in worker["volumes"]
    assert (ROOT / "Dockerfile").exists()


def test_flower_is_behind_basic_auth_and_loopback() -> None:
    cmd = command("flower")
    assert any(a.startswith("--basic-auth=${FLOWER_USER") for a in cmd)
    assert COMPOSE["services"]["flower"]["ports"] == ["127.0.0.1:5555:5555"]


def test_sentinel_profile_is_optional_and_consistent() -> None:
    """The replica and three Sentinels start only with ``--profile sentinel``; the URL and
    master name the file's header tells to put in .env are the ones the Sentinels serve."""
    services = COMPOSE["services"]
    optional = {name for name, s in services.items() if s.get("profiles")}
    assert optional == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    assert all(services[n]["profiles"] == ["sentinel"] for n in optional)
    assert not services["redis"].get("profiles")
    assert not services["worker"].get("profiles")

    replica = " ".join(command("redis-replica"))
    assert "--replicaof redis 6379" in replica
    assert "--appendonly yes" in replica
    assert "--maxmemory-policy noeviction" in replica

    header = (ROOT / "compose.yaml").read_text().splitlines()
    env = dict(
        line.lstrip("# ").split("=", 1)
        for line in header
        if line.startswith("#   ") and "=" in line and " " not in line.lstrip("# ")
    )
    target = redis_target(
        ProducerSettings(
            redis_url=env["REDIS_URL"], sentinel_master=env["WEBHOOKS_SENTINEL_MASTER"]
        )
    )
    sentinels = sorted(n for n in optional if n.startswith("sentinel-"))
    assert target.sentinels == tuple((n, 26379) for n in sentinels)
    for name in sentinels:
        script = command(name)[2]
        assert f"sentinel monitor {target.master} redis 6379 2" in script  # quorum 2 of 3
        assert "sentinel down-after-milliseconds" in script
        assert services[name]["environment"]["HOSTNAME_ANNOUNCE"] == name
