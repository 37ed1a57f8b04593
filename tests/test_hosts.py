"""Workers on separate hosts against one Redis: one host's link is cut mid-burst.

Worker A runs in a network namespace of its own, joined to this host by a veth pair (A's
"host" is 10.231.N.2, Redis and the receiver listen on 10.231.N.1); worker B runs on this host.
Cutting the veth leaves A running but unable to reach Redis or the subscriber, as a network
partition would. Its claimed deliveries are taken over when their lease ends, nothing is lost,
and once the link is back A's late results are refused by the lease check and leave the new
owner's records as they were. Needs root and ``ip`` (iproute2); run with ``-s`` for the figures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from tests.helpers import (
    IN_CI,
    Deployment,
    WorkerProcess,
    publish_burst,
    report,
    settled,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.slow

OUTAGE_MAX_S = 20.0

IP = shutil.which("ip")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and network namespaces are unavailable: {reason}")
    pytest.skip(f"network namespaces are unavailable: {reason}")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert IP is not None
    return subprocess.run([IP, *args], capture_output=True, text=True, check=check, timeout=30)


def _free_subnet() -> int:
    """A third octet N such that 10.231.N.0/30 is on no interface of this host."""
    used = _ip("-4", "-o", "addr", "show").stdout
    for n in [*range(os.getpid() % 200 + 1, 250), *range(1, 250)]:
        if f"10.231.{n}." not in used:
            return n
    raise RuntimeError("no free 10.231.N.0/30 subnet")


@dataclass
class Host:
    """A network namespace linked to this host by a veth pair."""

    namespace: str
    host_veth: str
    host_address: str
    address: str

    def cut(self) -> None:
        _ip("link", "set", self.host_veth, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_veth, "up")

    def command(self, *args: str) -> list[str]:
        assert IP is not None
        return [IP, "netns", "exec", self.namespace, *args]


@pytest.fixture
def host() -> Iterator[Host]:
    if IP is None:
        _unavailable("no `ip` command (Debian package iproute2)")
    tag = uuid.uuid4().hex[:8]
    n = _free_subnet()
    item = Host(f"rwtest-{tag}", f"rwh{tag}", f"10.231.{n}.1", f"10.231.{n}.2")
    created = _ip("netns", "add", item.namespace, check=False)
    if created.returncode != 0:
        _unavailable(created.stderr.strip() or "ip netns add failed")
    try:
        peer = f"rwn{tag}"
        _ip("link", "add", item.host_veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", item.namespace)
        _ip("addr", "add", f"{item.host_address}/30", "dev", item.host_veth)
        _ip("link", "set", item.host_veth, "up")
        inside = ("netns", "exec", item.namespace, IP or "ip")
        _ip(*inside, "addr", "add", f"{item.address}/30", "dev", peer)
        _ip(*inside, "link", "set", peer, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield item
    finally:
        # Deleting the host side removes the pair; deleting the namespace ends its interfaces.
        _ip("link", "del", item.host_veth, check=False)
        _ip("netns", "del", item.namespace, check=False)
        assert item.namespace not in _ip("netns", "list").stdout
        assert item.host_veth not in _ip("-o", "link", "show").stdout


@pytest.fixture
def remote_redis(host: Host, tmp_path: Path) -> Iterator[RedisServer]:
    # A password, as any Redis reachable from another host has (and Redis refuses clients off
    # loopback without one).
    server = RedisServer(
        tmp_path / "redis",
        host=host.host_address,
        binary=os.environ.get("REDIS_SERVER"),
        password="pw-" + uuid.uuid4().hex,
    )
    try:
        server.start()
    except Exception as exc:
        server.stop(kill=True)
        if IN_CI:
            pytest.fail(f"CI=true and no redis-server could be started: {exc}")
        pytest.skip(f"no redis-server available: {exc}")
    try:
        yield server
    finally:
        server.stop(kill=True)


def start_in_namespace(deployment: Deployment, host: Host, *extra: str) -> WorkerProcess:
    """A worker process inside ``host``'s namespace, with the deployment's environment."""
    return deployment.start_process("worker", *extra, ready=" ready.", launcher=host.command())


def test_a_cut_host_loses_nothing_and_its_stale_results_are_refused(
    host: Host, remote_redis: RedisServer, tmp_path: Path
) -> None:
    total = 400
    keys = Keys("rw")
    rdb = redis.Redis.from_url(remote_redis.url)
    deployment = Deployment(tmp_path=tmp_path, redis_url=remote_redis.url)
    deployment.settings["WEBHOOKS_CPU_AFFINITY"] = "off"
    receiver = Receiver(host=host.host_address, respond=lambda _r: Reply(delay_s=0.05)).start()
    publisher = Publisher(ProducerSettings(redis_url=remote_redis.url, visibility_timeout_s=3))
    try:
        deployment.subscriber("s", f"{receiver.url}/s", timeout_s=1, max_in_flight=8)
        a = start_in_namespace(deployment, host, "--hostname", "a@%h")
        b = deployment.start_worker("--hostname", "b@%h")

        def from_a() -> list[Received]:
            return [r for r in receiver.received if r.peer == host.address]

        ids = publish_burst(publisher, total)
        wait_until(lambda: len(from_a()) >= 20, timeout_s=60, what="A delivered some")

        def all_delivered() -> bool:
            return {r.headers["webhook-id"] for r in receiver.received} >= set(ids)

        host.cut()
        cut_at, cut_wall = time.monotonic(), time.time()
        at_cut, from_a_at_cut = len(receiver.received), len(from_a())
        try:
            # The link comes back once everything is delivered, or at the latest after
            # OUTAGE_MAX_S: past every lease A held (14 s), within the 30 s A keeps retrying to
            # record its results, so that its late FINISH reaches Redis.
            wait_for(lambda: all_delivered() and settled(rdb, keys), OUTAGE_MAX_S, "recovery")
        except TimeoutError:
            pass
        finally:
            host.restore()
        outage_s = time.monotonic() - cut_at
        wait_until(all_delivered, timeout_s=60, what="every event delivered")
        wait_until(lambda: settled(rdb, keys), timeout_s=30, what="nothing left pending")
        first_arrival: dict[str, float] = {}
        for item in receiver.received:
            event_id = item.headers["webhook-id"]
            first_arrival[event_id] = min(item.at, first_arrival.get(event_id, item.at))
        recovery_s = max(first_arrival.values()) - cut_wall

        def records() -> list[tuple[bytes | None, int, int]]:
            out = []
            for event_id in ids:
                did = f"{event_id}:s"
                state, attempts = rdb.hmget(keys.delivery(did), "state", "attempts")
                out.append((state, int(attempts or 0), int(rdb.llen(keys.attempts(did)))))
            return out

        # A's late FINISH reaches Redis once the link is back (its recording retries for 30 s):
        # each of its attempts is logged, and none is counted or moves a state.
        wait_until(
            lambda: sum(logged > attempts for _s, attempts, logged in records()) > 0,
            timeout_s=45,
            what="A's stale results reach Redis after the link is restored",
        )
        assert a.process.poll() is None, a.log()[-3000:]
        assert b.process.poll() is None, b.log()[-3000:]
        final = records()
        stale = sum(logged - attempts for _s, attempts, logged in final)
        assert all(state == b"delivered" for state, _a, _l in final)
        # The receiver answers every attempt that reaches it: each delivery was counted once,
        # by its owner, whatever A recorded late.
        assert all(attempts == 1 for _s, attempts, _l in final), Counter(
            attempts for _s, attempts, _l in final
        )
        assert settled(rdb, keys)
        assert rdb.zcard(keys.due) == 0
        counts = Counter(r.headers["webhook-id"] for r in receiver.received)
        assert set(counts) == set(ids)
        duplicates = sum(c - 1 for c in counts.values())
        report(
            "hosts",
            events=total,
            delivered_before_cut=at_cut,
            from_cut_host_before_cut=from_a_at_cut,
            duplicates=duplicates,
            cut_to_all_delivered_s=round(recovery_s, 1),
            outage_s=round(outage_s, 1),
            stale_results_refused=stale,
        )
    finally:
        deployment.kill_all()
        publisher.close()
        receiver.stop()
        rdb.close()
