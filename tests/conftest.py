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
from typing import Any

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


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (pyproject.toml): one xdist worker per core and one more; one process under
    ``-s``, which is for reading what a scenario prints (xdist workers' output would not show).

    The suite waits on processes and sockets about half of the time (the load average stays
    near 2.5 on 2 cores with 3 workers), so one worker more than the cores fills that wait: on
    2 cores, 4 min 21 s with 3 workers against 5 min 34 s with 2 (1,295 tests). Not two per
    core: with 4 on 2 cores a loopback receiver starved of CPU let a connect time out in
    tests/test_hosts.py, and a worker's late result under a full Redis was sent twice."""
    if config.getoption("capture") == "no":
        return 0
    return (os.cpu_count() or 1) + 1


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``-n``: a module that sets up once runs on one worker; every other test goes to
    whichever worker is free, in collection order (tests/scheduling.py)."""
    if config.getvalue("dist") != "load":
        return None  # a --dist the command line asked for
    from tests.scheduling import ModuleWhereShared

    config.option.loadscopereorder = False  # keep the slow-first order made below
    return ModuleWhereShared(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first (a module that sets up once goes first if it holds one), so that no
    long test starts last and runs alone; otherwise collection order."""
    from tests.scheduling import module_of, sets_up_once

    def shared(item: pytest.Item) -> bool:
        return sets_up_once(config.rootpath / module_of(item.nodeid))

    slow_modules = {module_of(i.nodeid) for i in items if i.get_closest_marker("slow")}

    def later(item: pytest.Item) -> bool:
        if shared(item):
            return module_of(item.nodeid) not in slow_modules
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
