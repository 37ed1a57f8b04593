"""The operator console without a browser: who may use it and where it may listen, what it
reads (the indexes the scripts keep for it), and how it answers when Redis is out of reach.
The pages themselves are driven in a real browser in ``tests/test_console_browser.py``."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest
import redis
from pydantic import SecretStr

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.console import views
from reseller_webhooks.worker.console.auth import (
    Credentials,
    credentials,
    is_loopback,
    refusal,
    weakness,
)
from reseller_webhooks.worker.console.guard import Guard, guard, host_name
from reseller_webhooks.worker.console.throttle import MAX_LOCK_S, lock_seconds
from reseller_webhooks.worker.devserver.redis_server import free_port
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.ops.actions import SubscriberHealth, parse_since
from reseller_webhooks.worker.records.activity import Activity, Rate, rates, window_minutes
from reseller_webhooks.worker.records.scripts import RECENT_KEPT, USER_EVENTS_KEPT
from reseller_webhooks.worker.records.shapes import Claim, Finish, split_delivery_id
from reseller_webhooks.worker.records.store import Store
from tests.helpers import ROUTES, Deployment, one_line_error

PASSWORD = "console-" + secrets.token_hex(8)
TOKEN = "tok-" + secrets.token_hex(16)


# -- who may use it --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.10", False),
        ("console.example", False),
    ],
)
def test_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    open_console = Credentials()
    assert (refusal(host, open_console) is None) is loopback
    assert refusal(host, Credentials("ops", SecretStr(PASSWORD))) is None


def test_a_login_needs_the_user_and_its_password_or_the_token() -> None:
    creds = Credentials("ops", SecretStr(PASSWORD), SecretStr(TOKEN))
    assert creds.required
    assert creds.login("ops", PASSWORD) == "ops"
    assert creds.login("ada", TOKEN) == "ada (token)"
    assert creds.login("ops", TOKEN[:-1]) is None
    assert creds.login("ada", PASSWORD) is None  # the password is the user's only
    assert creds.login("ops", "") is None
    assert creds.login("", PASSWORD) is None
    assert creds.login("ops\nforged log line", TOKEN) is None  # names are logged: none of that
    assert creds.bearer(f"Bearer {TOKEN}")
    assert creds.bearer(f"bearer {TOKEN}")
    assert not creds.bearer(f"Bearer {PASSWORD}")
    assert not creds.bearer(f"Basic {TOKEN}")
    without_token = Credentials("ops", SecretStr(PASSWORD))
    assert not without_token.bearer("Bearer ")
    assert without_token.login("ada", "") is None


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"console_user": "ops"}, "WEBHOOKS_CONSOLE_USER and WEBHOOKS_CONSOLE_PASSWORD: set both"),
        ({"console_password": PASSWORD}, "set both or neither"),
        ({"console_user": "ops", "console_password": "short"}, "at least 12 characters"),
        ({"console_token": "short"}, "WEBHOOKS_CONSOLE_TOKEN: at least 24 characters"),
    ],
)
def test_incomplete_or_weak_credentials_are_refused_by_name(
    values: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as raised:
        credentials(WorkerSettings(**values))
    assert PASSWORD not in str(raised.value)
    assert "short" not in str(raised.value)


def test_unset_credentials_from_compose_mean_none() -> None:
    settings = WorkerSettings(console_user="", console_password="", console_token="")
    assert not credentials(settings).required


# -- what it shows -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (" " * 12, "not only whitespace"),
        ("\t \n" * 4, "not only whitespace"),
        ("a" * 12, "not one short piece repeated"),
        ("abcabcabcabc", "not one short piece repeated"),
        ("1234" * 3, "not one short piece repeated"),
        ("aaaabbbbaaaa", "at least 5 different characters"),
        ("short", "at least 12 characters"),
        ("correct horse battery", None),
        ("console-4f9a1c2e", None),
    ],
)
def test_the_password_rule(secret: str, problem: str | None) -> None:
    assert weakness(secret, 12) == problem


@pytest.mark.parametrize(
    ("failures", "lock"),
    [(1, 0.0), (4, 0.0), (5, 1.0), (6, 2.0), (9, 16.0), (14, MAX_LOCK_S), (10_000, MAX_LOCK_S)],
)
def test_failures_lock_for_longer_and_longer_up_to_a_bound(failures: int, lock: float) -> None:
    assert lock_seconds(failures, 1.0) == lock


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:5556", True),
        ("LOCALHOST", True),
        ("127.0.0.1:8080", True),
        ("[::1]:5556", True),
        ("192.0.2.7", True),  # an address: a browser sends it only when it connected to it
        ("console.example.com", True),
        ("console.example.com.:443", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("", False),
    ],
)
def test_which_host_names_the_console_answers(host: str, allowed: bool) -> None:
    settings = WorkerSettings(console_allowed_hosts="console.example.com, other.example")
    assert guard(settings).host_allowed(host) is allowed
    assert host_name("[::1]:80") == "::1"


@pytest.mark.parametrize(
    ("peer", "forwarded", "proto", "client"),
    [
        ("10.0.0.2", "192.0.2.1", "https", ("192.0.2.1", "https")),
        ("10.0.0.2", "198.51.100.9, 192.0.2.1", "https", ("192.0.2.1", "https")),
        ("10.0.0.2", "192.0.2.1, 10.0.0.3", "http,https", ("192.0.2.1", "https")),
        ("10.0.0.2", "not-an-address", "gopher", ("10.0.0.2", "http")),
        ("10.0.0.2", None, None, ("10.0.0.2", "http")),
        ("192.0.2.50", "192.0.2.1", "https", ("192.0.2.50", "http")),  # not a proxy: ignored
    ],
)
def test_forwarded_headers_count_from_trusted_proxies_only(
    peer: str, forwarded: str | None, proto: str | None, client: tuple[str, str]
) -> None:
    proxies = guard(WorkerSettings(console_trusted_proxies="10.0.0.0/24"))
    assert proxies.client(peer, "http", forwarded, proto) == client


def test_bad_guard_settings_are_named() -> None:
    with pytest.raises(ConfigError, match=r"WEBHOOKS_CONSOLE_TRUSTED_PROXIES: 'proxy\.local'"):
        guard(WorkerSettings(console_trusted_proxies="proxy.local"))
    with pytest.raises(ConfigError, match=r"WEBHOOKS_CONSOLE_ALLOWED_HOSTS: 'https://x'"):
        guard(WorkerSettings(console_allowed_hosts="https://x"))
    assert Guard().origin_allowed(None)
    assert not Guard().origin_allowed("null")
    assert not Guard().origin_allowed("http://evil.example")
    assert Guard().origin_allowed("http://localhost:5556")


@pytest.mark.parametrize(
    ("query", "kind", "expected"),
    [
        ("msg_9Q3c:acme-crm", "auto", "delivery"),
        ("msg_9Q3c", "auto", "event"),
        ("usr_9b2f1c", "auto", "user"),
        ("msg_9Q3c", "user", "user"),
        ("anything", "nonsense", "user"),
    ],
)
def test_what_a_lookup_names(query: str, kind: str, expected: str) -> None:
    assert views.lookup_kind(query, kind) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/dead-letters?subscriber=a", "/dead-letters?subscriber=a"),
        (None, "/subscribers"),
        ("", "/subscribers"),
        ("//evil.example/x", "/subscribers"),
        ("https://evil.example/", "/subscribers"),
        ("/\\evil.example", "/subscribers"),
        ("subscribers", "/subscribers"),
        ("/subscribers\r\nSet-Cookie: x=1", "/subscribers"),
        ("/a\nb", "/subscribers"),
        ("/a\tb", "/subscribers"),
    ],
)
def test_after_a_login_only_paths_of_this_site(target: str | None, expected: str) -> None:
    assert views.local_path(target) == expected


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, ""),
        (0, ""),
        (45.2, "45 s"),
        (720, "12 min"),
        (11100, "3 h 5 min"),
        (187200, "2 d 4 h"),
    ],
)
def test_ages(seconds: float | None, shown: str) -> None:
    assert views.age(seconds) == shown


def test_times_are_utc_iso_to_the_second() -> None:
    assert views.iso_ms(1795338922104) == "2026-11-22T09:15:22Z"
    assert views.iso_ms(None) == views.iso_ms("") == ""
    assert views.iso_text("2026-11-22T09:15:22.104Z") == "2026-11-22T09:15:22Z"
    assert views.iso_text(None) == ""
    assert views.success(Rate(39, 1)) == "97.5 % of 40"
    assert views.success(Rate(0, 0)) == "no attempts"


def test_since_takes_a_duration_or_a_time_with_an_offset() -> None:
    assert parse_since("2h", now=10_000.0) == (10_000 - 7200) * 1000
    assert parse_since("2026-11-22T09:15:22Z") == 1795338922000
    with pytest.raises(ValueError, match="give an RFC 3339 time or a duration"):
        parse_since("yesterday")
    with pytest.raises(ValueError, match="needs a UTC offset"):
        parse_since("2026-11-22T09:15:22")


def test_the_rate_window_is_the_last_hour_of_minutes() -> None:
    minutes = window_minutes(60_000 * 1000 + 59_999)
    assert minutes[-1] == 1000
    assert minutes[0] == 940
    assert len(minutes) == 61


@pytest.mark.parametrize(
    ("enabled", "state", "status", "line"),
    [
        (True, {}, "ok", "ok"),
        (False, {"disabled": "1"}, "off", "off in config"),
        (True, {"disabled": "1", "reason": "HTTP 410"}, "disabled", "DISABLED: HTTP 410"),
        (True, {"disabled": "0", "failures": "2"}, "ok", "ok (2 failed attempt(s) in a row)"),
        (
            True,
            {"failing_since": "1", "failures": "7"},
            "failing",
            "failing (7 failed attempt(s) in a row)",
        ),
        (
            True,
            {
                "failing_since": "1",
                "failures": "10",
                "breaker": "open",
                "probe_at": "4102444800000",
            },
            "failing",
            "failing (10 failed attempt(s) in a row); breaker open (next probe"
            " 2100-01-01T00:00:00.000Z)",
        ),
        (
            True,
            {"failing_since": "1", "breaker": "half_open", "trial_left": "2"},
            "failing",
            "failing; breaker half-open (2 trial(s) left)",
        ),
        (
            True,
            {
                "disabled": "1",
                "reason": "down 5 days",
                "breaker": "open",
                "probe_lease": "4102444800000",
            },
            "disabled",
            "DISABLED: down 5 days; breaker open (probe in flight)",
        ),
    ],
)
def test_subscriber_status(enabled: bool, state: dict[str, str], status: str, line: str) -> None:
    health = SubscriberHealth("s", in_file=True, enabled_in_file=enabled, state=state)
    assert (health.status, health.describe()) == (status, line)


@pytest.mark.parametrize(
    ("limit", "state", "line"),
    [
        (None, {}, "ok"),
        (20.0, {}, "ok; rate 20.0/s"),
        (
            20.0,
            {"rate": "14", "rate_changed_at": "10000", "rate_from": "20"},
            "ok; rate 16.0/s (lowered by 429s; configured 20/s)",
        ),
        (
            None,
            {"rate": "21", "rate_changed_at": "11000", "rate_from": "30"},
            "ok; rate 21.0/s (lowered by 429s; configured none)",
        ),
        (
            None,
            {"paused_until": "71000"},
            "ok; paused until 1970-01-01T00:01:11.000Z (Retry-After)",
        ),
        (None, {"paused_until": "9000"}, "ok"),  # over
    ],
)
def test_subscriber_status_shows_the_rate_limit(
    limit: float | None, state: dict[str, str], line: str
) -> None:
    health = SubscriberHealth(
        "s", in_file=True, enabled_in_file=True, state=state, rate_limit=limit, now_ms=11_000
    )
    assert health.describe() == line


# -- the indexes the scripts keep for it -------------------------------------------------------


def _finish(outcome: str) -> Finish:
    return Finish(outcome, {"outcome": outcome, "at": "2026-01-01T00:00:00Z"}, delay_ms=60_000)


def test_the_scripts_count_attempts_list_the_latest_and_index_users(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    ids = [publisher.user_created({**sample_user(), "id": f"usr_{n % 2}"}) for n in range(3)]
    drained = store.drain(ROUTES, batch=100, now_iso="2026-01-01T00:00:00Z")
    activity = Activity(store)
    # Each user's events, newest first, expiring with the delivery records.
    assert activity.user_event_ids("usr_0") == [ids[2], ids[0]]
    assert activity.user_event_ids("usr_1") == [ids[1]]
    assert 0 < rdb.ttl(keys.user_events("usr_0")) <= 3600
    # usr_0's second event waits behind its first (per-user ordering): two are claimed.
    batch = store.claim("s", drained.triggers[0].token, most=10, lease_ms=10_000, bound=1)
    assert batch is not None
    first, second = batch.claims
    store.finish([(first, _finish("delivered")), (second, _finish("retry"))])
    assert rates(store, ["s", "other"]) == {"s": Rate(ok=1, failed=1), "other": Rate(0, 0)}
    (minute,) = rdb.keys(keys.rate_minute("s", "*"))
    assert 0 < rdb.ttl(minute) <= 3660
    latest = activity.recent_attempts("s")
    assert {a.delivery_id for a in latest} == {first.delivery_id, second.delivery_id}
    user = activity.events([ids[0]], ["s"])
    assert [d.state for d in user[0].deliveries] == ["delivered"]
    assert user[0].user_id == "usr_0"
    assert user[0].body_kept


def finish_directly(store: Store, keys: Keys, did: str, outcome: str) -> None:
    """The FINISH script for one running delivery, without a claim."""
    store.redis.hset(keys.delivery(did), mapping={"state": "running", "lease": "7"})
    event_id, sub = split_delivery_id(did)
    claim = Claim(
        did, event_id, sub, attempt=1, trigger="scheduled", body=b"", lease=7, expires_at=0
    )
    store.finish([(claim, Finish(outcome, {}, reason="why", disable_after_ms=10**9))])


def test_an_unattempted_delivery_is_listed_but_not_counted(
    store: Store, rdb: redis.Redis, keys: Keys
) -> None:
    finish_directly(store, keys, "msg_a:s", "skipped")
    finish_directly(store, keys, "msg_b:s", "dead")
    assert rates(store, ["s"]) == {"s": Rate(ok=0, failed=1)}
    assert rdb.lrange(keys.recent_attempts("s"), 0, -1) == [b"msg_b:s", b"msg_a:s"]


def test_the_indexes_stay_bounded(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    user = {**sample_user(), "id": "usr_busy"}
    for _ in range(3):
        publisher.publish_batch(
            [{"event": "reseller.user.updated", "data": user}] * USER_EVENTS_KEPT
        )
        store.drain(ROUTES, batch=500, now_iso="2026-01-01T00:00:00Z")
    assert USER_EVENTS_KEPT <= rdb.llen(keys.user_events("usr_busy")) <= 2 * USER_EVENTS_KEPT
    for n in range(2 * RECENT_KEPT + 5):
        finish_directly(store, keys, f"msg_{n}:s", "delivered")
    assert RECENT_KEPT <= rdb.llen(keys.recent_attempts("s")) <= 2 * RECENT_KEPT


# -- the command -------------------------------------------------------------------------------


def test_refuses_to_listen_beyond_loopback_without_a_login(deployment: Deployment) -> None:
    deployment.subscriber("s", "http://127.0.0.1:9/s")
    result = deployment.cli("console", "--host", "0.0.0.0", "--port", "0")
    one_line_error(result, "the console needs a login to listen on 0.0.0.0")
    assert "WEBHOOKS_CONSOLE_PASSWORD" in result.stderr
    deployment.settings.update(WEBHOOKS_CONSOLE_USER="ops", WEBHOOKS_CONSOLE_PASSWORD="weak-pw")
    result = deployment.cli("console", "--host", "127.0.0.1", "--port", "0")
    one_line_error(result, "WEBHOOKS_CONSOLE_PASSWORD: at least 12 characters")
    assert "weak-pw" not in result.stderr
    deployment.settings.update(WEBHOOKS_CONSOLE_PASSWORD=" " * 12)
    result = deployment.cli("console", "--host", "127.0.0.1", "--port", "0")
    one_line_error(result, "WEBHOOKS_CONSOLE_PASSWORD: not only whitespace")


def test_redis_out_of_reach_is_a_503_page_without_its_address(deployment: Deployment) -> None:
    deployment.subscriber("s", "http://127.0.0.1:9/s")
    redis_password = "pw-" + secrets.token_hex(8)
    port = free_port()
    deployment.settings["REDIS_URL"] = f"redis://:{redis_password}@127.0.0.1:{port}/0"
    console, url = deployment.start_console(
        WEBHOOKS_CONSOLE_USER="ops",
        WEBHOOKS_CONSOLE_PASSWORD=PASSWORD,
        WEBHOOKS_CONSOLE_TOKEN=TOKEN,
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/healthz").text == "ok\n"
        login = client.get("/login")
        assert login.headers["X-Frame-Options"] == "DENY"  # no page can be framed by another
        assert "frame-ancestors 'none'" in login.headers["Content-Security-Policy"]
        assert login.headers["Cache-Control"] == "no-store"
        assert (
            client.get("/nothing/here", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
            == 404
        )
        for path in ("/subscribers", "/dead-letters", "/lookup?q=usr_1", "/subscribers/s"):
            page = client.get(path, headers=auth)
            assert page.status_code == 503, path
            assert "Redis is unavailable (ConnectionError)" in page.text
            for secret in (redis_password, str(port), PASSWORD, TOKEN):
                assert secret not in page.text
        action = client.post("/subscribers/s/disable", headers=auth)
        assert action.status_code == 503
        # Without the token: the login page, not the data.
        anonymous = client.get("/subscribers", follow_redirects=False)
        assert anonymous.status_code == 302
        assert anonymous.headers["location"].startswith("/login")
        # A wrong token cannot be told from a right one while failures cannot be counted.
        wrong = client.get("/subscribers", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 503
    console.stop()
    log = console.log()
    assert "console: Redis is unavailable (ConnectionError)" in log
    for secret in (redis_password, PASSWORD, TOKEN):
        assert secret not in log


def test_a_script_acts_with_the_token_and_no_xsrf_token(
    deployment: Deployment, rdb: redis.Redis, keys: Keys
) -> None:
    deployment.subscriber("s", "http://127.0.0.1:9/s")
    console, url = deployment.start_console(WEBHOOKS_CONSOLE_TOKEN=TOKEN)
    with httpx.Client(base_url=url, timeout=30) as client:
        done = client.post(
            "/subscribers/s/disable",
            data={"reason": "from a script"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            follow_redirects=False,
        )
        assert done.status_code == 302
        assert rdb.hget(keys.subscriber_state("s"), "reason") == b"from a script"
        # The same request from a browser session (no token header) needs the XSRF token.
        refused = client.post("/subscribers/s/enable")
        assert refused.status_code == 403
        assert rdb.hget(keys.subscriber_state("s"), "disabled") == b"1"
        unknown = client.post(
            "/subscribers/nope/enable", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert unknown.status_code == 404
        assert "No subscriber &#x27;nope&#x27; in the subscribers file" in unknown.text
    console.stop()
    assert re.search(
        r"console: token \(127\.0\.0\.1\) disabled subscriber s \(from a", console.log()
    )


def test_logging_out_ends_the_session_for_a_copied_cookie_too(
    deployment: Deployment, rdb: redis.Redis, keys: Keys
) -> None:
    deployment.subscriber("s", "http://127.0.0.1:9/s")
    console, url = deployment.start_console(
        WEBHOOKS_CONSOLE_USER="ops", WEBHOOKS_CONSOLE_PASSWORD=PASSWORD
    )
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/login")
        xsrf = client.cookies["_xsrf"]
        logged_in = client.post("/login", data={"user": "ops", "password": PASSWORD, "_xsrf": xsrf})
        assert logged_in.status_code == 302
        session = client.cookies["rw_console"]
        assert client.get("/subscribers").status_code == 200
        (record,) = rdb.keys(keys.console_session("*"))
        assert session.encode() not in record  # Redis holds a digest, not the id
        assert rdb.get(record) == b"ops"
        assert client.post("/logout", data={"_xsrf": xsrf}).status_code == 302
        assert rdb.keys(keys.console_session("*")) == []
    # The cookie as it was before logging out, replayed by someone who copied it.
    with httpx.Client(base_url=url, timeout=30, cookies={"rw_console": session}) as stolen:
        page = stolen.get("/subscribers", follow_redirects=False)
        assert page.status_code == 302
        assert page.headers["location"].startswith("/login")
    console.stop()
    assert re.search(r"console: ops \(127\.0\.0\.1\) logged out", console.log())
