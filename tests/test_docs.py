"""The README and docs/ as a reader uses them: every relative link leads somewhere, the code a
reader copies runs against a real Redis, and the systemd units pass ``systemd-analyze verify``."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import types
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import ROOT
from tests.topology import missing

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
UNITS = sorted((ROOT / "ops" / "systemd").glob("*.service"))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if line.startswith("#"):
            base = slug(line.lstrip("#"))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), re.M | re.S)


def relative_links() -> list[tuple[Path, str]]:
    return [
        (page, target)
        for page in PAGES
        for target in LINK.findall(FENCE.sub("", page.read_text()))
        if not re.match(r"[a-z]+:", target)
    ]


@pytest.mark.parametrize(("page", "target"), relative_links(), ids=lambda v: str(v))
def test_every_relative_link_leads_to_a_file_and_anchor(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    assert file.exists(), f"{page.name}: {target}: no such file"
    if anchor and file.suffix == ".md":
        assert anchor in anchors(file), f"{page.name}: {target}: no such heading"


def test_the_readme_leads_and_every_page_is_linked() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 350
    headings = [line for line in readme.splitlines() if line.startswith("## ")]
    assert headings.index("## What a subscriber receives") <= 2  # early
    assert "4-5 minutes" in readme  # what the test command costs
    linked = {t.partition("#")[0] for p, t in relative_links() if p.name == "README.md"}
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in linked, f"README does not link {page.name}"


def test_the_files_the_readme_says_to_copy_exist() -> None:
    copied = re.findall(r"^cp (\S+) ", (ROOT / "README.md").read_text(), re.M)
    assert copied
    for source in copied:
        assert (ROOT / source).is_file(), source


def test_the_readme_publishing_example_runs(redis_url: str, rdb: redis.Redis) -> None:
    (block,) = [b for b in code_blocks(ROOT / "README.md", "python") if "Publisher(" in b]
    user = sample_user()
    users = [{**user, "id": f"usr_{i}"} for i in range(3)]
    namespace = {"user": user, "users": users}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REDIS_URL", redis_url)
        exec(compile(block, "README.md", "exec"), namespace)
        namespace["publisher"].close()
    ids = namespace["ids"]
    assert len(ids) == 3
    assert namespace["event_id"].startswith("msg_")
    assert rdb.llen(Keys("rw").pending) == 5  # created, the batch, the keyed update


def test_the_web_app_module_publishes_each_change_once(redis_url: str, rdb: redis.Redis) -> None:
    """docs/publishing-from-python.md's shared module, run as written: sync and async calls
    of the same change give one event; a new change, a new one."""
    page = ROOT / "docs" / "publishing-from-python.md"
    (block,) = [b for b in code_blocks(page, "python") if b.startswith("# webhooks.py")]
    module = types.ModuleType("webhooks")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REDIS_URL", redis_url)
        exec(compile(block, str(page), "exec"), module.__dict__)
        user = sample_user()
        first = module.publish_user_change("reseller.user.created", user)
        again = asyncio.run(module.publish_user_change_async("reseller.user.created", user))
        changed = {**user, "updatedAt": "2026-12-01T10:00:00Z"}
        update = asyncio.run(module.publish_user_change_async("reseller.user.updated", changed))
        module.publisher().close()
    assert first == again != update
    assert rdb.llen(Keys("rw").pending) == 2
    # The framework examples need Django, FastAPI or Flask, which the tests do not install:
    # they are checked to be Python that uses the shared module as written.
    for example in code_blocks(page, "python"):
        compile(example, str(page), "exec")
        if "import webhooks" in example:
            used = set(re.findall(r"webhooks\.(\w+)\(", example))
            assert used
            assert used <= set(module.__dict__), used


def test_the_systemd_units_name_what_they_run() -> None:
    names = {unit.name for unit in UNITS}
    assert names == {
        "reseller-webhooks-worker@.service",
        "reseller-webhooks-scheduler.service",
        "reseller-webhooks-console.service",
        "reseller-webhooks-flower.service",
    }
    for unit in UNITS:
        text = unit.read_text()
        assert "User=reseller-webhooks" in text
        assert "Restart=on-failure" in text
        (start,) = re.findall(r"^ExecStart=(.*)$", text, re.M)
        assert start.startswith("/opt/reseller-webhooks/venv/bin/")
        assert "0.0.0.0" not in text
        # Secrets only in the EnvironmentFile= files, never in a unit.
        assert not re.search(r"^Environment=.*(PASSWORD|whsec_|BASIC_AUTH)", text, re.M)


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("no systemd-analyze (Debian: apt-get install systemd)")
    bin_dir = Path(shutil.which("reseller-webhooks") or ROOT / ".venv/bin/x").parent
    for unit in UNITS:  # the installed commands in place of /opt's
        name = unit.name.replace("@.", "@9464.")
        text = unit.read_text().replace("/opt/reseller-webhooks/venv/bin/", f"{bin_dir}/")
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [str(analyze), "verify", "--man=no", *sorted(p.name for p in tmp_path.iterdir())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in result.stderr.splitlines() if ".service" in line]
    assert result.returncode == 0, result.stderr
    assert not problems, result.stderr
