"""The operator console in a real browser: Debian's Chromium driven by Playwright, against a
real worker delivering to a loopback receiver, a password-protected Redis, and the console
process itself (without the subscribers' secrets in its environment).

One stage for the module (Redis, receiver, worker, a console and a read-only one, one
browser); each test publishes what it looks at. Screenshots of every page go to
``tests/artifacts/console/`` (``CONSOLE_SCREENSHOTS=docs/console`` refreshes the README's).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver, Reply
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import (
    ROOT,
    Deployment,
    Script,
    WorkerProcess,
    assert_audit_balances,
    every_value,
    own_values,
    person,
    wait_until,
)
from tests.topology import missing

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.slow

USER = "ops"
PASSWORD = "console-" + secrets.token_hex(10)
TOKEN = "token-" + secrets.token_hex(16)
REDIS_PASSWORD = "redis-" + secrets.token_hex(10)
SHOTS = Path(os.environ.get("CONSOLE_SCREENSHOTS") or ROOT / "tests" / "artifacts" / "console")
KEYS = Keys("rw")
FLAKY_SCHEDULE = {"schedule_s": [0, 0.3, 3600], "jitter": 0}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if sync_playwright is None:
        missing("the playwright package is not installed (pip install -e '.[dev]')")
    if path is None:
        missing("no chromium on PATH (Debian: apt-get install chromium)")
    assert path is not None
    return path


@dataclass
class Stage:
    deployment: Deployment
    receiver: Receiver
    script: Script
    rdb: redis.Redis
    publisher: Publisher
    console: WorkerProcess
    url: str
    read_only: WorkerProcess
    read_only_url: str
    browser: Browser
    logged_in: dict[str, Any]

    def page(self, *, logged_in: bool = True) -> Page:
        context: BrowserContext = self.browser.new_context(
            viewport={"width": 1200, "height": 720},
            storage_state=self.logged_in if logged_in else None,
        )
        return context.new_page()

    def publish(self, user_id: str, event: str = "reseller.user.created") -> str:
        return self.publisher.publish(event, {**sample_user(), "id": user_id})

    def settle(self) -> None:
        """Wait until every subscriber but the failing one has nothing in flight, so that the
        replies a test queues for a path go to the events it publishes."""
        wait_until(
            lambda: (
                not any(
                    self.rdb.zcard(KEYS.open_deliveries(s))
                    for s in ("acme-crm", "strict", "toggle")
                )
            ),
            what="earlier deliveries finished",
        )

    def dead_letter(self, user_id: str, status: int = 400) -> str:
        """A delivery to ``strict`` dead-lettered by a real 4xx answer; its delivery id."""
        self.settle()
        self.script.then("/strict", Reply(status, body=b'{"error": "unknown tenant"}'))
        did = f"{self.publish(user_id)}:strict"
        wait_until(lambda: self.rdb.exists(KEYS.dead_letter(did)), what="the dead letter")
        return did


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def log_in(page: Page, base: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/subscribers")
    page.fill("input[name=user]", USER)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def row(page: Page, subscriber: str) -> Any:
    return page.locator(f"tr[data-subscriber='{subscriber}']")


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    executable = chromium()
    tmp = tmp_path_factory.mktemp("console")
    try:
        server = RedisServer(tmp / "redis", password=REDIS_PASSWORD).start()
    except Exception as exc:
        missing(f"no redis-server could be started: {exc}")
        raise
    receiver = Receiver().start()
    script = Script()
    receiver.respond = script
    script.always("/flaky", Reply(503, body=b"maintenance"))
    deployment = Deployment(tmp_path=tmp, redis_url=server.url)
    deployment.subscriber("acme-crm", f"{receiver.url}/acme")
    deployment.subscriber("flaky", f"{receiver.url}/flaky", retry=FLAKY_SCHEDULE)
    deployment.subscriber("strict", f"{receiver.url}/strict")
    deployment.subscriber("toggle", f"{receiver.url}/toggle")
    login = {
        "WEBHOOKS_CONSOLE_USER": USER,
        "WEBHOOKS_CONSOLE_PASSWORD": PASSWORD,
        "WEBHOOKS_CONSOLE_TOKEN": TOKEN,
    }
    rdb = redis.Redis.from_url(server.url)
    publisher = Publisher(ProducerSettings(redis_url=server.url, visibility_timeout_s=3))
    pw = sync_playwright().start()
    try:
        deployment.start_worker()
        console, url = deployment.start_console(**login)
        read_only, read_only_url = deployment.start_console("--read-only", **login)
        browser = pw.chromium.launch(executable_path=executable)
        context = browser.new_context()
        page = context.new_page()
        log_in(page, url)
        page.wait_for_url(f"{url}/subscribers")
        logged_in = context.storage_state()
        context.close()
        yield Stage(
            deployment,
            receiver,
            script,
            rdb,
            publisher,
            console,
            url,
            read_only,
            read_only_url,
            browser,
            dict(logged_in),
        )
        browser.close()
    finally:
        pw.stop()
        deployment.kill_all()
        publisher.close()
        rdb.close()
        receiver.stop()
        server.stop()


def test_logging_in(stage: Stage) -> None:
    page = stage.page(logged_in=False)
    page.goto(f"{stage.url}/dead-letters")
    assert page.url.startswith(f"{stage.url}/login")
    shot(page, "login")
    log_in(page, stage.url, password=PASSWORD + "x")
    assert page.locator(".error").inner_text() == "Wrong user name or password."
    assert "/login" in page.url
    page.fill("input[name=user]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stage.url}/subscribers")
    assert page.locator("h1").inner_text() == "Subscribers"
    assert page.locator(".who").inner_text().startswith(USER)
    page.click("text=Log out")
    page.wait_for_url(re.compile(r".*/login.*"))
    page.goto(f"{stage.url}/subscribers")
    assert "/login" in page.url  # the session ended with the logout
    log = stage.console.log()
    assert f"console: failed login as '{USER}' from 127.0.0.1" in log
    assert f"console: {USER} (127.0.0.1) logged in" in log
    assert f"console: {USER} (127.0.0.1) logged out" in log
    page.context.close()


def test_a_failing_subscriber_is_shown_failing(stage: Stage) -> None:
    stage.publish("usr_failing_1")
    stage.publish("usr_failing_2")
    # Two users: each gets its first attempt and its retry, both answered 503, then waits.
    wait_until(
        lambda: len([r for r in stage.receiver.received if r.path == "/flaky"]) >= 4,
        what="flaky answered 503 four times",
    )
    wait_until(
        lambda: all(
            stage.rdb.hget(KEYS.delivery(f"{e}:flaky"), "next") is not None
            and int(stage.rdb.hget(KEYS.delivery(f"{e}:flaky"), "attempts") or 0) == 2
            for e in _user_events(stage, "usr_failing_1", "usr_failing_2")
        ),
        what="both recorded with their retry waiting",
    )
    page = stage.page()
    page.goto(f"{stage.url}/subscribers")
    flaky = row(page, "flaky")
    state = flaky.locator("td.state").inner_text()
    assert state.startswith("failing (")
    cells = [c.inner_text() for c in flaky.locator("td").all()]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", cells[2])  # failing since, UTC
    assert int(cells[3]) >= 2  # backlog: both still waiting
    assert re.fullmatch(r"0\.0 % of \d+", cells[5])
    assert row(page, "acme-crm").locator("td.state").inner_text() == "enabled"
    assert re.fullmatch(r"100\.0 % of \d+", row(page, "acme-crm").locator("td").nth(5).inner_text())
    shot(page, "subscribers")
    page.click("a:text-is('flaky')")
    page.wait_for_url(f"{stage.url}/subscribers/flaky")
    # What the subscriber is: its URL as shown everywhere (no credentials, no query) and patterns.
    assert page.locator("td.url").inner_text() == f"{stage.receiver.url}/flaky"
    assert page.locator("td.events").inner_text() == "reseller.user.*"
    attempts = page.locator("table.attempts tbody tr")
    assert attempts.count() >= 4
    first = [c.inner_text() for c in attempts.nth(0).locator("td").all()]
    assert first[4:7] == ["HTTP 503", first[5], "retry"]
    assert first[5].endswith(" ms")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first[7])  # next due
    shot(page, "subscriber")
    page.context.close()


def _user_events(stage: Stage, *users: str) -> list[str]:
    return [e.decode() for user in users for e in stage.rdb.lrange(KEYS.user_events(user), 0, -1)]


def test_a_dead_letter_history_and_its_replay(stage: Stage) -> None:
    did = stage.dead_letter("usr_dead")
    event_id = did.split(":")[0]
    page = stage.page()
    page.goto(f"{stage.url}/dead-letters")
    listed = page.locator(f"tr[data-delivery='{did}']")
    assert listed.locator("td").nth(6).inner_text() == "permanent failure: HTTP 400"
    shot(page, "dead-letters")
    listed.locator(f"a:text-is('{did}')").click()
    page.wait_for_url(re.compile(r".*/dead-letters/msg_.*"))
    history = page.locator("table.attempts tbody tr")
    assert history.count() == 1
    cells = [c.inner_text() for c in history.nth(0).locator("td").all()]
    assert cells[3] == "HTTP 400"
    assert cells[5] == "dead"
    assert cells[7] == '{"error": "unknown tenant"}'
    user = sample_user()
    assert user["email"] not in page.content()  # the body stays hidden ...
    shot(page, "dead-letter")
    page.click("a.reveal")
    assert user["email"] in page.locator("pre.body").inner_text()  # ... until asked for
    assert f"console: {USER} (127.0.0.1) opened the body of dead letter {did}" in (
        stage.console.log()
    )
    before = len(stage.receiver.received)
    page.click("button:text-is('Replay')")
    page.wait_for_url(f"{stage.url}/dead-letters")
    assert page.locator(".flash").inner_text() == "Replayed 1 dead letter(s)."
    arrived = wait_until(
        lambda: [r for r in stage.receiver.received[before:] if r.path == "/strict"],
        what="the replayed delivery at the receiver",
    )
    assert arrived[0].headers["webhook-id"] == event_id
    assert arrived[0].json["data"]["id"] == "usr_dead"
    wait_until(
        lambda: stage.rdb.hget(KEYS.delivery(did), "state") == b"delivered",
        what="the replay recorded as delivered",
    )
    page.reload()
    assert page.locator(f"tr[data-delivery='{did}']").count() == 0
    assert f"console: {USER} (127.0.0.1) replayed 1 dead letter(s): {did}" in stage.console.log()
    page.context.close()


def test_replay_all_matching_shows_its_progress_until_it_is_done(stage: Stage) -> None:
    since = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    dids = [stage.dead_letter(f"usr_all_{n}", 422) for n in range(2)]
    page = stage.page()
    page.goto(f"{stage.url}/dead-letters?{urlencode({'subscriber': 'strict', 'since': since})}")
    # Redis holds writes back: the job cannot finish before the browser shows it running.
    stage.rdb.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    try:
        page.click("button:text-is('Replay all 2 matching')")
        page.wait_for_url(re.compile(r".*/jobs/[A-Za-z0-9_-]{16}"))
        running = page.locator(".job").inner_text()
        assert "Working: 0 of 2 gone through" in running or "Waiting" in running
        shot(page, "job")
    finally:
        stage.rdb.execute_command("CLIENT", "UNPAUSE")
    # The page reloads itself: no click, no reload here.
    page.wait_for_selector("text=Finished: Replayed 2 dead letter(s).", timeout=15_000)
    assert not any(stage.rdb.exists(KEYS.dead_letter(did)) for did in dids)
    page.context.close()


def test_purge_asks_first_then_deletes_exactly_what_it_named(stage: Stage) -> None:
    first = stage.dead_letter("usr_purge_1", 422).split(":")[0]
    second = stage.dead_letter("usr_purge_2", 422).split(":")[0]
    page = stage.page()
    page.goto(f"{stage.url}/dead-letters?subscriber=strict")
    page.check(f"input[value='{first}:strict']")
    page.click("button:text-is('Purge selected...')")
    assert page.locator("h1").inner_text() == "Purge 1 dead letter(s)?"
    shot(page, "purge")
    assert stage.rdb.exists(KEYS.dead_letter(f"{first}:strict"))  # nothing deleted yet
    page.click("button:text-is('Purge 1 dead letter(s)')")
    page.wait_for_url(re.compile(r".*/dead-letters\?subscriber=strict"))
    assert page.locator(".flash").inner_text() == "Purged 1 dead letter(s)."
    assert not stage.rdb.exists(KEYS.dead_letter(f"{first}:strict"))
    assert stage.rdb.exists(KEYS.dead_letter(f"{second}:strict"))
    page.context.close()


def test_disabling_and_enabling_a_subscriber(stage: Stage) -> None:
    page = stage.page()
    page.goto(f"{stage.url}/subscribers")
    toggle = row(page, "toggle")
    toggle.locator("input[name=reason]").fill("maintenance window")
    toggle.locator("button:text-is('Disable')").click()
    page.wait_for_url(f"{stage.url}/subscribers")
    assert page.locator(".flash").inner_text() == "toggle: disabled (maintenance window)"
    state = row(page, "toggle").locator("td.state").inner_text()
    assert state.startswith("disabled: maintenance window (since ")
    # The command line reads the same records.
    status = stage.deployment.cli("subscribers", "status").stdout
    assert "toggle  DISABLED: maintenance window" in status
    shot(page, "subscribers-disabled")
    before = len(stage.receiver.received)
    while_disabled = stage.publish("usr_toggle_1")
    wait_until(
        lambda: stage.rdb.exists(KEYS.dead_letter(f"{while_disabled}:toggle")),
        what="dead-lettered while disabled",
    )
    row(page, "toggle").locator("button:text-is('Enable')").click()
    page.wait_for_url(f"{stage.url}/subscribers")
    assert page.locator(".flash").inner_text() == "toggle: enabled"
    assert row(page, "toggle").locator("td.state").inner_text() == "enabled"
    after = stage.publish("usr_toggle_2")
    got = wait_until(
        lambda: [
            r
            for r in stage.receiver.received[before:]
            if r.path == "/toggle" and r.headers["webhook-id"] == after
        ],
        what="a delivery to the enabled subscriber",
    )
    assert len(got) == 1
    assert not any(
        r.headers["webhook-id"] == while_disabled
        for r in stage.receiver.received[before:]
        if r.path == "/toggle"
    )
    log = stage.console.log()
    assert f"console: {USER} (127.0.0.1) disabled subscriber toggle (maintenance window)" in log
    assert f"console: {USER} (127.0.0.1) enabled subscriber toggle" in log
    page.context.close()


def test_lookup_by_user_id(stage: Stage) -> None:
    created = stage.publish("usr_lookup", "reseller.user.created")
    updated = stage.publish("usr_lookup", "reseller.user.updated")
    wait_until(
        lambda: stage.rdb.hget(KEYS.delivery(f"{updated}:acme-crm"), "state") == b"delivered",
        what="both delivered to acme-crm",
    )
    page = stage.page()
    page.goto(f"{stage.url}/lookup")
    page.fill("input[name=q]", "usr_lookup")
    page.click("button:text-is('Look up')")
    page.wait_for_url(re.compile(r".*/lookup\?q=usr_lookup.*"))
    assert page.locator(".count").inner_text() == "2 event(s) on record for user usr_lookup."
    sections = page.locator("section.event")
    assert [sections.nth(i).get_attribute("data-event") for i in range(2)] == [updated, created]
    newest = sections.nth(0)
    assert newest.locator("h2").inner_text() == f"reseller.user.updated {updated}"
    deliveries = {
        d.get_attribute("data-delivery"): d.locator("h3").inner_text()
        for d in newest.locator("div.delivery").all()
    }
    assert deliveries[f"{updated}:acme-crm"] == "to acme-crm: delivered"
    # flaky answers 503: the user's first event waits for its retry, the second behind it.
    assert deliveries[f"{updated}:flaky"] == "to flaky: blocked"
    blocked = newest.locator(f"div.delivery[data-delivery='{updated}:flaky'] p.explain")
    assert blocked.inner_text().startswith("Blocked: waiting behind an earlier event about")
    acme_note = newest.locator(f"div.delivery[data-delivery='{updated}:acme-crm'] p.explain")
    assert acme_note.count() == 0  # the note goes with the blocked state only
    assert set(deliveries) == {f"{updated}:{s}" for s in ("acme-crm", "flaky", "strict", "toggle")}
    acme = newest.locator(f"div.delivery[data-delivery='{updated}:acme-crm'] table tbody tr")
    assert [c.inner_text() for c in acme.nth(0).locator("td").all()][3:6] == [
        "HTTP 200",
        acme.nth(0).locator("td").nth(4).inner_text(),
        "delivered",
    ]
    assert sample_user()["email"] not in page.content()
    shot(page, "lookup", full_page=False)  # the newest event: the page goes on alike
    page.context.close()


def test_forgetting_a_user_names_what_goes_then_erases_it(stage: Stage) -> None:
    user = person("erased")
    stage.settle()
    stage.script.then("/strict", Reply(400, body=b"{}"))
    event_id = stage.publisher.user_created(user)
    wait_until(
        lambda: (
            stage.rdb.exists(KEYS.dead_letter(f"{event_id}:strict"))
            and stage.rdb.hget(KEYS.delivery(f"{event_id}:acme-crm"), "state") == b"delivered"
        ),
        what="delivered to acme-crm, dead at strict",
    )
    page = stage.page()
    page.goto(f"{stage.url}/lookup?{urlencode({'q': user['id'], 'kind': 'user'})}")
    page.click("button:text-is('Forget this user')")
    counts = {
        li.get_attribute("data-count"): li.locator("strong").inner_text()
        for li in page.locator("ul.forget li[data-count]").all()
    }
    # flaky answers 503 and retries in an hour: its delivery is the one still open.
    assert counts == {"events": "1", "dead_letters": "1", "open_deliveries": "1"}
    shot(page, "forget-confirm")
    page.click("button:text-is('Forget this user')")
    page.wait_for_url(f"{stage.url}/lookup")
    assert page.locator(".flash").inner_text().startswith("Erased: 1 event body(ies), 1 undel")
    values = every_value(stage.rdb)
    for value in own_values(user):
        assert not any(value in v for v in values), value
    assert stage.rdb.hget(KEYS.delivery(f"{event_id}:flaky"), "state") == b"erased"
    assert_audit_balances(stage.rdb, KEYS)
    assert f"console: {USER} (127.0.0.1) erased a user's data: 1 event(s)" in stage.console.log()
    page.context.close()


def test_a_post_without_the_xsrf_token_is_refused(stage: Stage) -> None:
    page = stage.page()
    page.goto(f"{stage.url}/subscribers")  # logged in: the session cookie goes along
    forged = page.request.post(
        f"{stage.url}/subscribers/acme-crm/disable", form={"reason": "forged"}
    )
    assert forged.status == 403
    wrong = page.request.post(
        f"{stage.url}/subscribers/acme-crm/disable", form={"reason": "forged", "_xsrf": "2|x|y|1"}
    )
    assert wrong.status == 403
    assert stage.rdb.hget(KEYS.subscriber_state("acme-crm"), "disabled") != b"1"
    assert "forged" not in stage.console.log()
    page.context.close()


def test_read_only_shows_no_action_and_refuses_posts(stage: Stage) -> None:
    page = stage.page(logged_in=False)
    log_in(page, stage.read_only_url)
    page.wait_for_url(f"{stage.read_only_url}/subscribers")
    assert page.locator(".badge").inner_text() == "read-only"
    for path in ("/subscribers", "/subscribers/toggle", "/dead-letters"):
        page.goto(f"{stage.read_only_url}{path}")
        assert page.locator("form[action$='/disable'], form[action$='/enable']").count() == 0
        assert page.locator("button:text-is('Replay selected'), input[type=checkbox]").count() == 0
    page.goto(f"{stage.read_only_url}/lookup?q=usr_lookup&kind=user")
    assert page.locator("form[action='/users/forget']").count() == 0
    token = page.locator("form[action='/logout'] input[name=_xsrf]").get_attribute("value")
    refused = page.request.post(
        f"{stage.read_only_url}/subscribers/acme-crm/disable",
        form={"reason": "read-only", "_xsrf": token or ""},
    )
    assert refused.status == 403
    assert "Read-only console" in refused.text()
    forget = page.request.post(
        f"{stage.read_only_url}/users/forget",
        form={"user": "usr_lookup", "confirm": "yes", "_xsrf": token or ""},
    )
    assert forget.status == 403
    assert stage.rdb.hget(KEYS.subscriber_state("acme-crm"), "disabled") != b"1"
    page.context.close()


def test_no_secret_on_any_page(stage: Stage) -> None:
    """Every page, bodies opened, and the console's log: no subscriber secret, no console
    password or token, no Redis password."""
    dead = stage.dead_letter("usr_secrets")
    event_id = dead.split(":")[0]
    secret_values = list(stage.deployment.secrets.values())
    forbidden = [
        *secret_values,
        *(s.removeprefix("whsec_") for s in secret_values),
        PASSWORD,
        TOKEN,
        REDIS_PASSWORD,
    ]
    page = stage.page()
    paths = [
        "/subscribers",
        *(f"/subscribers/{s}" for s in ("acme-crm", "flaky", "strict", "toggle")),
        "/dead-letters",
        f"/dead-letters/{dead}",
        f"/dead-letters/{dead}?body=1",
        f"/lookup?q={event_id}",
        "/lookup?q=usr_secrets",
        f"/events/{event_id}/body",
        "/subscribers/nobody",
        "/login",
    ]
    for path in paths:
        response = page.goto(f"{stage.url}{path}")
        assert response is not None
        html = page.content()
        for value in forbidden:
            assert value not in html, path
    body = page.goto(f"{stage.url}/events/{event_id}/body")
    assert body is not None
    assert json.loads(page.locator("pre.body").inner_text())["data"]["id"] == "usr_secrets"
    for log in (stage.console.log(), stage.read_only.log()):
        for value in forbidden:
            assert value not in log
    page.context.close()
