"""Fixtures for every test: a private redis-server, a deployment of real worker processes, a
loopback receiver. What tests share besides fixtures is in tests/helpers.py.

Each session (each pytest-xdist worker is one) starts its own Redis on a free loopback port
(never the one a machine may already run). Without a redis-server the real-process tests are
skipped locally, and fail under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.records.store import Store
from tests.helpers import IN_CI, Deployment, Script

# Property tests check what inputs do, not how fast: on a loaded 2-core machine Hypothesis's
# timing checks (per-example deadline, "too slow" data generation) fail tests that are correct.
hypothesis.settings.register_profile(
    "project", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("project")


def shares_a_wider_fixture(item: pytest.Item) -> bool:
    """The test uses a fixture set up once for its module (or class, or package)."""
    info = getattr(item, "_fixtureinfo", None)  # pytest keeps the resolved fixtures here
    if info is None:
        return False
    return any(
        definitions[-1].scope in {"module", "class", "package"}
        for definitions in info.name2fixturedefs.values()
        if definitions
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order and group the tests for running side by side (pytest-xdist, ``--dist loadgroup``):

    - the tests of a module that use what it sets up once (a worker, a Sentinel group, a venv)
      form one group, run by one xdist worker, so that it is set up once;
    - slow tests (and groups holding one) go first, so that no long one starts last.
    """

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    shared = {item for item in items if shares_a_wider_fixture(item)}
    slow_groups = {module(i) for i in shared if i.get_closest_marker("slow")}
    for item in shared:
        item.add_marker(pytest.mark.xdist_group(module(item)))

    def later(item: pytest.Item) -> bool:
        if item in shared:
            return module(item) not in slow_groups
        return item.get_closest_marker("slow") is None

    items.sort(key=later)


def start_own_redis(directory: Path) -> RedisServer:
    """A redis-server on a free port, checked to be the one this session started: two
    sessions side by side could pick the same free port, and the second server would exit
    while its client talked to the first."""
    for attempt in range(5):
        server = RedisServer(directory / str(attempt), binary=os.environ.get("REDIS_SERVER"))
        try:
            server.start()
        except Exception:
            if attempt == 4:
                raise
            continue
        pid = server.process.pid if server.process else None
        client = redis.Redis.from_url(server.url)
        try:
            ours = int(client.info("server")["process_id"]) == pid
        finally:
            client.close()
        if ours:
            return server
        server.stop(kill=True)
    raise RuntimeError("no free port for redis-server after 5 attempts")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    try:
        server = start_own_redis(tmp_path_factory.mktemp("redis"))
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"CI=true and no redis-server could be started: {exc}")
        pytest.skip(f"no redis-server available: {exc}")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def keys() -> Keys:
    return Keys("rw")


@pytest.fixture
def publisher(redis_url: str) -> Iterator[Publisher]:
    with Publisher(ProducerSettings(redis_url=redis_url, visibility_timeout_s=3)) as pub:
        yield pub


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rcv:
        yield rcv


@pytest.fixture
def deployment(tmp_path: Path, redis_url: str) -> Iterator[Deployment]:
    dep = Deployment(tmp_path=tmp_path, redis_url=redis_url)
    yield dep
    dep.kill_all()


@pytest.fixture
def script(receiver: Receiver) -> Script:
    s = Script()
    receiver.respond = s
    return s


@pytest.fixture
def store(rdb: redis.Redis, keys: Keys) -> Store:
    """The records' scripts on the session's Redis, without workers."""
    return Store(
        rdb,
        keys,
        record_retention_s=3600,
        dead_letter_retention_s=3600,
        attempt_log_size=10,
        trigger_expiry_s=30,
        failing_after=3,
    )
