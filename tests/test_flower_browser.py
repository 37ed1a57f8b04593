"""Flower in a real browser: Debian's Chromium (via Playwright) opens the worker page, its
Config tab and the task list of a real worker that has delivered an event to a loopback
receiver. Flower runs as its own process on a free loopback port against the session Redis,
as ``reseller-webhooks dev`` and compose run it.
"""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.redis_server import free_port
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import CELERY, Deployment, wait_until
from tests.test_console_browser import chromium

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.slow


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthcheck", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def flower(deployment: Deployment, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "flower.log").open("wb")
    process = subprocess.Popen(
        [*CELERY, "flower", f"--port={port}", "--address=127.0.0.1"],
        env={**deployment.env, "FLOWER_UNAUTHENTICATED_API": "true"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url) or process.poll() is not None, timeout_s=30, what="Flower")
        assert process.poll() is None, (tmp_path / "flower.log").read_text()
        yield url
    finally:
        process.kill()
        process.wait()
        log.close()


def test_flower_shows_the_worker_its_config_and_its_tasks(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, flower: str
) -> None:
    executable = chromium()
    deployment.subscriber("acme-crm", f"{receiver.url}/acme")
    worker = deployment.start_worker()
    event_id = publisher.publish("reseller.user.created", sample_user())
    assert receiver.wait_for(1)[0].headers["webhook-id"] == event_id
    assert "EncodeError" not in worker.log()
    # The worker's log says where delivery health is, since Flower's tasks stay green.
    assert "delivery health: the console (reseller-webhooks console)" in worker.log()

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=executable)
        page = browser.new_page()
        page.goto(f"{flower}/workers")
        node = page.locator("a.worker-name-link").first
        node.wait_for(timeout=20_000)
        node.click()
        page.wait_for_url("**/worker/*")
        page.locator("#workername").wait_for(timeout=10_000)
        assert "Unable to get stats" not in page.content()
        page.click("#worker-tab-config")
        config = page.locator("#tab-config")
        config.get_by_text("broker_transport_options").wait_for(timeout=10_000)
        assert "worker_send_task_events" in config.inner_text()

        page.goto(f"{flower}/tasks")
        rows = page.locator("#tasks-table tbody tr")
        wait_until(
            lambda: "webhooks.deliver" in " ".join(rows.all_inner_texts()),
            timeout_s=20,
            what="the delivery task in Flower's task list",
        )
        listed = " ".join(rows.all_inner_texts())
        assert "webhooks.dispatch" in listed
        assert "SUCCESS" in listed
        browser.close()
    finally:
        pw.stop()
    assert "EncodeError" not in worker.log()
