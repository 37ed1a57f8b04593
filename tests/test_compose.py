"""compose.yaml cannot run here (no container engine), so check it statically."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
import yaml

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
        else:
            assert name == "redis", f"{name}: unexpected command {cmd}"
        assert service.get("image") or service.get("build"), name


def test_workers_get_config_and_secrets_from_environment() -> None:
    worker: dict[str, Any] = COMPOSE["services"]["worker"]
    env = worker["environment"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert env["WEBHOOKS_SUBSCRIBERS"] == "/config/subscribers.yaml"
    assert env["ACME_WEBHOOK_SECRET"].startswith("${ACME_WEBHOOK_SECRET")
    assert "./subscribers.yaml:/config/subscribers.yaml:ro" in worker["volumes"]
    assert (ROOT / "Dockerfile").exists()


def test_flower_is_behind_basic_auth_and_loopback() -> None:
    cmd = command("flower")
    assert any(a.startswith("--basic-auth=${FLOWER_USER") for a in cmd)
    assert COMPOSE["services"]["flower"]["ports"] == ["127.0.0.1:5555:5555"]
