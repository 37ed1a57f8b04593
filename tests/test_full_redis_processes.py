"""A Redis at ``maxmemory`` with ``noeviction`` is an outage, not a crash: a worker started while
it refuses writes, and one delivering when memory runs out, stay up, say so once, and deliver
every event exactly once when memory is raised; the console answers a clear 503 to a login and
reports itself degraded meanwhile.

Each test fills this module's own redis-server until it really refuses a write, then raises
``maxmemory`` again (the session's server is left alone).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from reseller_webhooks.producers.errors import UnavailableError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver, Reply
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import Deployment, Script, publish_burst, settled, wait_until

REFUSING = "Redis refuses writes (OutOfMemoryError)"
PASSWORD = "full-redis-console-pw"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    own = RedisServer(tmp_path_factory.mktemp("full-redis")).start()
    yield own
    own.stop(kill=True)


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    rdb = redis.Redis.from_url(server.url)
    rdb.config_set("maxmemory", "0")
    rdb.flushall()
    yield rdb
    rdb.close()


@pytest.fixture
def deployment(tmp_path: Path, server: RedisServer) -> Iterator[Deployment]:
    dep = Deployment(tmp_path=tmp_path, redis_url=server.url)
    yield dep
    dep.kill_all()


@pytest.fixture
def publisher(server: RedisServer) -> Iterator[Publisher]:
    with Publisher(ProducerSettings(redis_url=server.url, visibility_timeout_s=3)) as pub:
        yield pub


def fill(rdb: redis.Redis) -> None:
    """Put 5 MB in, then lower ``maxmemory`` below what the server counts until a write is
    refused (what it counts moves a little as buffers are freed)."""
    pipe = rdb.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"ballast:{i}", b"x" * 10_000)
    pipe.execute()

    def refuses() -> bool:
        memory = rdb.info("memory")
        counted = int(memory["used_memory"]) - int(memory["mem_not_counted_for_evict"])
        rdb.config_set("maxmemory", str(counted - 1_000_000))
        try:
            rdb.set("fill-probe", b"", xx=True)  # writes nothing when accepted
        except redis.exceptions.OutOfMemoryError:
            return True
        return False

    wait_until(refuses, what="Redis refusing writes")


def raise_memory(rdb: redis.Redis) -> None:
    rdb.config_set("maxmemory", "0")


@pytest.mark.slow
def test_a_worker_started_while_redis_is_full_stays_up_and_delivers_once_memory_is_raised(
    deployment: Deployment, client: redis.Redis, publisher: Publisher, receiver: Receiver
) -> None:
    deployment.subscriber("s", f"{receiver.url}/s")
    before = publisher.user_created({**sample_user(), "id": "usr_before"})
    fill(client)
    worker = deployment.start_worker()  # today: "Unrecoverable error", exit 1, before "ready"
    wait_until(lambda: REFUSING in worker.log(), timeout_s=60, what="the outage logged")
    with pytest.raises(UnavailableError):
        publisher.user_created({**sample_user(), "id": "usr_refused"})
    assert worker.process.poll() is None

    raise_memory(client)
    wait_until(
        lambda: "Redis accepts writes again" in worker.log(), timeout_s=60, what="the end logged"
    )
    after = publisher.user_created({**sample_user(), "id": "usr_after"})
    wait_until(lambda: len(receiver.received) >= 2, timeout_s=60, what="both deliveries")
    wait_until(lambda: settled(client, Keys("rw")), timeout_s=60, what="nothing left")
    assert Counter(r.headers["webhook-id"] for r in receiver.received) == {before: 1, after: 1}
    assert worker.process.poll() is None
    log = worker.log()
    assert log.count(REFUSING) == 1  # once per outage, not per retry
    assert "Unrecoverable error" not in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_a_worker_delivering_when_memory_runs_out_delivers_every_event_once_after(
    deployment: Deployment,
    client: redis.Redis,
    publisher: Publisher,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    script = Script(Reply(200, delay_s=0.02))
    receiver.respond = script
    deployment.subscriber("s", f"{receiver.url}/s")
    worker = deployment.start_worker()
    ids = publish_burst(publisher, 60)
    wait_until(lambda: len(receiver.received) >= 5, timeout_s=60, what="deliveries under way")
    fill(client)
    wait_until(
        lambda: REFUSING in worker.log(), timeout_s=60, what="the worker meeting the refusal"
    )
    assert worker.process.poll() is None
    raise_memory(client)
    wait_until(lambda: len(receiver.received) >= len(ids), timeout_s=60, what="every delivery")
    wait_until(lambda: settled(client, Keys("rw")), timeout_s=60, what="nothing left")
    received = Counter(r.headers["webhook-id"] for r in receiver.received)
    assert received == dict.fromkeys(ids, 1)  # every event, each once
    assert client.zcard(Keys("rw").dead) == 0
    assert worker.process.poll() is None
    log = worker.log()
    assert log.count(REFUSING) == 1
    assert "Redis accepts writes again" in log
    assert "Unrecoverable error" not in log


@pytest.mark.slow
def test_a_console_login_while_redis_is_full_is_a_clear_503_and_works_after(
    deployment: Deployment, client: redis.Redis
) -> None:
    deployment.subscriber("s", "http://127.0.0.1:9/s")
    console, url = deployment.start_console(
        WEBHOOKS_CONSOLE_USER="ops", WEBHOOKS_CONSOLE_PASSWORD=PASSWORD
    )
    with httpx.Client(base_url=url, timeout=30) as browser:
        assert browser.get("/healthz").text == "ok\n"
        browser.get("/login")
        form = {"user": "ops", "password": PASSWORD, "_xsrf": browser.cookies["_xsrf"]}
        fill(client)
        refused = browser.post("/login", data=form)
        assert refused.status_code == 503
        assert "Redis refuses writes (OutOfMemoryError)" in refused.text
        assert "rw_console" not in browser.cookies
        health = browser.get("/healthz")
        assert (health.status_code, health.text) == (200, f"degraded: {REFUSING}\n")

        raise_memory(client)
        assert browser.get("/healthz").text == "ok\n"
        logged_in = browser.post("/login", data=form, follow_redirects=False)
        assert logged_in.status_code == 302
        assert browser.get("/subscribers").status_code == 200
    console.stop()
    log = console.log()
    assert log.count(REFUSING) == 1
    assert "Traceback" not in log


def test_a_redis_busy_running_a_script_refuses_a_publish_as_unavailable(
    server: RedisServer, client: redis.Redis, publisher: Publisher
) -> None:
    """Another refusal than a full Redis: ``BUSY`` while a script overruns; nothing recorded."""
    client.config_set("busy-reply-threshold", "50")
    looping = redis.Redis.from_url(server.url)

    def overrun() -> None:
        with pytest.raises(redis.ResponseError, match="killed"):
            looping.eval("while true do end", 0)

    stuck = threading.Thread(target=overrun)
    stuck.start()
    try:

        def refused() -> str | None:
            try:
                publisher.user_created({**sample_user(), "id": "usr_busy"})
            except UnavailableError as exc:
                return str(exc)
            return None

        assert "(BUSY;" in wait_until(refused, what="a publish refused as BUSY")
    finally:
        wait_until(lambda: _kill_script(client), timeout_s=60, what="the script killed")
        stuck.join(timeout=10)
        looping.close()
    assert client.llen(Keys("rw").pending) == 0
    publisher.user_created({**sample_user(), "id": "usr_after_busy"})
    assert client.llen(Keys("rw").pending) == 1


def _kill_script(rdb: redis.Redis) -> bool:
    """Stop the overrunning script; True once none runs."""
    try:
        rdb.script_kill()
    except redis.ResponseError as exc:
        return "NOTBUSY" in str(exc)
    return True
