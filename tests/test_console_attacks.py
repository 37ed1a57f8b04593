"""The console against an attacker, at the HTTP level: a web page rebinding its name to the
console (``Host``, ``Origin``), guessing the login and the token, a forged ``X-Forwarded-For``,
and a line break in ``next=``. Two consoles for the module on a Redis of its own: one open
(loopback, no login), one with a login behind a trusted proxy (the tests send the proxy's
``X-Forwarded-*`` headers from 127.0.0.1, each with client addresses of its own)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from tests.conftest import start_own_redis
from tests.helpers import (
    Deployment,
    WorkerProcess,
    assert_audit_balances,
    every_value,
    own_values,
    person,
    wait_until,
)

pytestmark = pytest.mark.slow  # two console processes for the module

USER = "ops"
PASSWORD = "console-" + secrets.token_hex(10)
TOKEN = "token-" + secrets.token_hex(16)
KEYS = Keys("rw")


@dataclass
class Consoles:
    rdb: redis.Redis
    open: WorkerProcess
    open_url: str
    guarded: WorkerProcess
    url: str
    redis_url: str


@pytest.fixture(scope="module")
def consoles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Consoles]:
    tmp = tmp_path_factory.mktemp("attacks")
    server = start_own_redis(tmp / "redis")
    deployment = Deployment(tmp_path=tmp, redis_url=server.url)
    deployment.subscriber("s", "http://127.0.0.1:9/s")
    rdb = redis.Redis.from_url(server.url)
    try:
        # The open one starts while the other does (a console takes a few seconds to start).
        open_console = deployment.start_process(
            "console", "--port", "0", ready=None, with_secrets=False
        )
        guarded, url = deployment.start_console(
            WEBHOOKS_CONSOLE_USER=USER,
            WEBHOOKS_CONSOLE_PASSWORD=PASSWORD,
            WEBHOOKS_CONSOLE_TOKEN=TOKEN,
            WEBHOOKS_CONSOLE_TRUSTED_PROXIES="127.0.0.1",
            WEBHOOKS_CONSOLE_LOGIN_DELAY_S="1",
        )
        ready = "console on http://"
        line = wait_until(
            lambda: next((x for x in open_console.log().splitlines() if x.startswith(ready)), None),
            timeout_s=30,
            what="the open console started",
        )
        yield Consoles(rdb, open_console, line.split()[2], guarded, url, server.url)
    finally:
        deployment.kill_all()
        rdb.close()
        server.stop()


@pytest.fixture(autouse=True)
def no_failures_yet(consoles: Consoles) -> None:
    """Each test starts without earlier tests' failed logins."""
    for key in consoles.rdb.scan_iter(KEYS.console_throttle("*", "*")):
        consoles.rdb.delete(key)


def via_proxy(client_address: str, proto: str = "http") -> dict[str, str]:
    return {"X-Forwarded-For": client_address, "X-Forwarded-Proto": proto}


def log_in(
    client: httpx.Client, address: str, password: str = PASSWORD, **more: str
) -> httpx.Response:
    client.get("/login", headers=via_proxy(address))
    return client.post(
        "/login",
        data={"user": USER, "password": password, "_xsrf": client.cookies["_xsrf"], **more},
        headers=via_proxy(address),
    )


def test_a_rebound_name_and_another_sites_form_are_refused(consoles: Consoles) -> None:
    with httpx.Client(base_url=consoles.open_url, timeout=10) as client:
        rebound = client.get("/dead-letters", headers={"Host": "evil.example"})
        assert rebound.status_code == 400
        assert "Unknown host name" in rebound.text
        assert client.get("/subscribers/s", headers={"Host": "evil.example:80"}).status_code == 400
        port = consoles.open_url.rsplit(":", 1)[1]
        assert client.get("/dead-letters", headers={"Host": f"localhost:{port}"}).status_code == 200
        assert client.get("/healthz", headers={"Host": "evil.example"}).text == "ok\n"

        xsrf = client.cookies["_xsrf"]
        for origin in ("http://evil.example", "null"):
            refused = client.post(
                "/subscribers/s/disable", data={"_xsrf": xsrf}, headers={"Origin": origin}
            )
            assert refused.status_code == 403, origin
        assert consoles.rdb.hget(KEYS.subscriber_state("s"), "disabled") is None
        # The console's own page, and a forged X-Forwarded-For from a peer that is no proxy.
        done = client.post(
            "/subscribers/s/disable",
            data={"_xsrf": xsrf},
            headers={"Origin": consoles.open_url, "X-Forwarded-For": "192.0.2.66"},
        )
        assert done.status_code == 302
        assert consoles.rdb.hget(KEYS.subscriber_state("s"), "disabled") == b"1"
        client.post("/subscribers/s/enable", data={"_xsrf": xsrf})
    assert re.search(r"console: local \(127\.0\.0\.1\) disabled subscriber s", consoles.open.log())
    assert "192.0.2.66" not in consoles.open.log()


def test_login_guesses_are_throttled_per_address_and_user_but_never_for_good(
    consoles: Consoles,
) -> None:
    with httpx.Client(base_url=consoles.url, timeout=10) as operator:
        # The operator's browser logged in before: it carries the cookie that says so.
        assert log_in(operator, "192.0.2.3").status_code == 302
        with httpx.Client(base_url=consoles.url, timeout=10) as attacker:
            for _ in range(5):
                assert (
                    log_in(attacker, "192.0.2.1", "guess-" + secrets.token_hex(6)).status_code
                    == 403
                )
            locked = log_in(attacker, "192.0.2.1")  # the right password, while locked
            assert locked.status_code == 429
            assert "Too many failed logins" in locked.text
            assert int(locked.headers["Retry-After"]) >= 1
        with httpx.Client(base_url=consoles.url, timeout=10) as elsewhere:
            # Another address on the same user name: the user is locked too...
            assert log_in(elsewhere, "192.0.2.2").status_code == 429
        # ...but not for the operator's own browser.
        assert log_in(operator, "192.0.2.3").status_code == 302
        # And the lock ends: the right password gets in again.
        with httpx.Client(base_url=consoles.url, timeout=10) as later:
            wait_until(
                lambda: log_in(later, "192.0.2.1").status_code == 302,
                what="the address's lock ended",
            )
    log = consoles.guarded.log()
    assert log.count("console: failed login as 'ops' from 192.0.2.1") == 5
    assert "console: ops (192.0.2.3) logged in" in log
    assert PASSWORD not in log


def test_token_guesses_are_logged_and_throttled(consoles: Consoles) -> None:
    with httpx.Client(base_url=consoles.url, timeout=10) as client:
        guesses = ["token-" + secrets.token_hex(16) for _ in range(5)]
        for guess in guesses:
            wrong = client.get(
                "/subscribers",
                headers={"Authorization": f"Bearer {guess}", **via_proxy("192.0.2.9")},
            )
            assert wrong.status_code == 302  # to the login page
        right = client.get(
            "/subscribers", headers={"Authorization": f"Bearer {TOKEN}", **via_proxy("192.0.2.9")}
        )
        assert right.status_code == 429
        elsewhere = client.get(
            "/subscribers", headers={"Authorization": f"Bearer {TOKEN}", **via_proxy("192.0.2.10")}
        )
        assert elsewhere.status_code == 200
    log = consoles.guarded.log()
    assert log.count("console: wrong token from 192.0.2.9") == 5
    for secret in (*guesses, TOKEN):
        assert secret not in log


def test_behind_the_tls_proxy_cookies_are_secure(consoles: Consoles) -> None:
    https = via_proxy("192.0.2.4", "https")
    form = httpx.get(f"{consoles.url}/login", headers=https)
    assert "; Secure" in form.headers["set-cookie"]
    xsrf = form.cookies["_xsrf"]  # a browser sends it over the proxy's HTTPS
    logged_in = httpx.post(
        f"{consoles.url}/login",
        data={"user": USER, "password": PASSWORD, "_xsrf": xsrf},
        headers={**https, "Cookie": f"_xsrf={xsrf}"},
    )
    assert logged_in.status_code == 302
    cookies = logged_in.headers.get_list("set-cookie")
    assert any(c.startswith("rw_console=") for c in cookies)
    assert all("; Secure" in c for c in cookies), cookies
    plain = httpx.get(f"{consoles.url}/login", headers=via_proxy("192.0.2.4"))
    assert "Secure" not in plain.headers["set-cookie"]
    assert "console: ops (192.0.2.4) logged in" in consoles.guarded.log()


def test_a_line_break_in_next_goes_to_a_safe_page(consoles: Consoles) -> None:
    forged = "/subscribers\r\nSet-Cookie: planted=1"
    with httpx.Client(base_url=consoles.url, timeout=10) as client:
        wrong = log_in(client, "192.0.2.5", "guess-" + secrets.token_hex(6), next=forged)
        assert wrong.status_code == 403
        sessions = len(consoles.rdb.keys(KEYS.console_session("*")))
        done = log_in(client, "192.0.2.5", next=forged)
        assert done.status_code == 302
        assert done.headers["location"] == "/subscribers"
        assert "planted" not in client.cookies
        assert len(consoles.rdb.keys(KEYS.console_session("*"))) == sessions + 1
        again = client.get("/login", params={"next": forged}, headers=via_proxy("192.0.2.5"))
        assert again.status_code == 302
        assert again.headers["location"] == "/subscribers"


def test_forgetting_a_user_asks_first_and_only_from_a_page_of_this_console(
    consoles: Consoles,
) -> None:
    user = person("asked")
    with Publisher(ProducerSettings(redis_url=consoles.redis_url)) as publisher:
        publisher.user_created(user)
        publisher.user_updated({**user, "company": "v2"})
    with httpx.Client(base_url=consoles.url, timeout=10) as client:
        assert log_in(client, "192.0.2.20").status_code == 302
        page = client.get("/lookup", params={"q": user["id"]}, headers=via_proxy("192.0.2.20"))
        assert 'action="/users/forget"' in page.text
        form = {"user": user["id"], "_xsrf": client.cookies["_xsrf"]}
        for headers, status in (
            ({"Host": "evil.example"}, 400),
            ({"Origin": "http://evil.example"}, 403),
        ):
            refused = client.post("/users/forget", data={**form, "confirm": "yes"}, headers=headers)
            assert refused.status_code == status, headers
        without_token = client.post("/users/forget", data={"user": user["id"], "confirm": "yes"})
        assert without_token.status_code == 403
        asked = client.post("/users/forget", data=form, headers=via_proxy("192.0.2.20"))
        assert asked.status_code == 200
        counts = dict(re.findall(r'data-count="(\w+)">[^<]*<strong>(\d+)</strong>', asked.text))
        assert counts == {"events": "2", "dead_letters": "0", "open_deliveries": "0"}
        values = every_value(consoles.rdb)
        assert any(user["email"].encode() in v for v in values)  # asking took nothing
        done = client.post(
            "/users/forget", data={**form, "confirm": "yes"}, headers=via_proxy("192.0.2.20")
        )
        assert done.status_code == 302
    values = every_value(consoles.rdb)
    for value in own_values(user):
        assert not any(value in v for v in values), value
    assert_audit_balances(consoles.rdb, KEYS)
    log = consoles.guarded.log()
    assert "console: ops (192.0.2.20) erased a user's data: 2 event(s)" in log
    # The lookup's own address names the user (the access log); the erasure never does.
    erasing = [x for x in log.splitlines() if "forget" in x or "erased" in x]
    assert erasing
    assert not any(user["id"] in x for x in erasing)
