"""Sentinel with real processes on loopback: a master, a replica and three Sentinels.

The master is SIGKILLed in the middle of a burst; Sentinel promotes the replica; the worker, the
publisher and the CLI find the new master by themselves. Every event whose publish returned an id
is delivered; duplicates carry the same webhook-id. Run with ``-s`` for the figures.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.errors import NotReplicatedError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import (
    Deployment,
    assert_audit_balances,
    publish_burst,
    report,
    settled,
    wait_until,
)
from tests.test_metrics import metrics_worker, samples, scrape_text
from tests.topology import MASTER, SentinelGroup, missing

pytestmark = pytest.mark.slow


def started_group(directory: Path) -> SentinelGroup:
    group = SentinelGroup(directory, password="s-" + secrets.token_hex(8))
    try:
        group.start()
    except RuntimeError as exc:
        group.stop()
        missing(f"the Sentinel group did not start: {exc}")
    return group


@pytest.fixture(scope="module")
def shared_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """One group for the tests that leave it as they found it (its master and replica up)."""
    group = started_group(tmp_path_factory.mktemp("sentinel"))
    yield group
    group.stop()


@pytest.fixture
def group(shared_group: SentinelGroup) -> SentinelGroup:
    """The shared group, emptied, with its first master and the replica in sync."""
    master = shared_group.nodes["master"]
    client = redis.Redis(port=master.port)
    try:
        client.flushall()
    finally:
        client.close()
    shared_group.wait(
        lambda: (
            shared_group.role("replica")[3] == b"connected"
            and shared_group.sentinels_agree(master.port)
        ),
        "the shared group as the tests found it",
    )
    return shared_group


@pytest.fixture
def own_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A group of its own, for a test that kills its master."""
    group = started_group(tmp_path / "sentinel")
    yield group
    group.stop()


def producer_settings(group: SentinelGroup, **extra: object) -> ProducerSettings:
    return ProducerSettings(
        redis_url=group.url,
        sentinel_master=MASTER,
        sentinel_password=group.password,
        visibility_timeout_s=3,
        **extra,  # type: ignore[arg-type]
    )


class Publishing(threading.Thread):
    """Publishes small batches until stopped; keeps the ids of every call that returned."""

    def __init__(self, publisher: Publisher, batch: int = 10) -> None:
        super().__init__(daemon=True)
        self.publisher = publisher
        self.batch = batch
        self.stop = threading.Event()
        self.returned: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        user = sample_user()
        while not self.stop.is_set():
            try:
                ids = self.publisher.publish_batch([("reseller.user.created", user)] * self.batch)
            except Exception as exc:
                self.failures.append(type(exc).__name__)
                self.stop.wait(0.05)
                continue
            now = time.time()
            with self.lock:
                self.returned += [(now, i) for i in ids]
            self.stop.wait(0.01)

    def ids(self) -> set[str]:
        with self.lock:
            return {i for _, i in self.returned}


@pytest.mark.timeout(300)
def test_master_killed_mid_delivery_loses_no_published_event(
    tmp_path: Path, own_group: SentinelGroup, receiver: Receiver
) -> None:
    group = own_group
    dep = Deployment(tmp_path=tmp_path, redis_url=group.url, settings=group.client_env())
    dep.subscriber("s", f"{receiver.url}/s", timeout_s=1)
    try:
        dep.start_worker()  # one worker: dep.workers[0]
        with Publisher(producer_settings(group)) as publisher:
            publishing = Publishing(publisher)
            publishing.start()
            try:
                receiver.wait_for(300, timeout_s=60)
                old, new = group.nodes["master"], group.nodes["replica"]
                old.stop(kill=True)  # SIGKILL: a crash; its writes after the last WAIT are gone
                killed = time.time()
                at_kill = len(receiver.received)
                wait_until(lambda: group.master_port() == new.port, timeout_s=30, what="promotion")
                promoted = time.time()
                wait_until(
                    lambda: any(t > promoted for t, _ in publishing.returned),
                    timeout_s=30,
                    what="the publisher publishing to the new master",
                )
                wait_until(
                    lambda: sum(t > promoted for t, _ in publishing.returned) >= 200,
                    timeout_s=60,
                    what="a second burst published after the promotion",
                )
            finally:
                publishing.stop.set()
                publishing.join(timeout=30)
        # The CLI finds the new master too.
        cli = dep.cli("publish", "reseller.user.created", "--sample")
        assert cli.returncode == 0, cli.stderr
        cli_id = cli.stdout.strip()
        published = publishing.ids() | {cli_id}

        worker = dep.workers[0]
        wait_until(
            lambda: (
                {r.headers["webhook-id"] for r in receiver.received} >= published
                or worker.process.poll() is not None
            ),
            timeout_s=150,
            what="every event whose publish returned an id delivered",
        )
        assert worker.process.poll() is None, f"the worker died:\n{worker.log()[-4000:]}"
        received = list(receiver.received)
        counts = Counter(r.headers["webhook-id"] for r in received)
        after = [r for r in received if r.at > promoted]
        new_ids = {i for t, i in publishing.returned if t > promoted}
        first_new = min((r.at for r in after if r.headers["webhook-id"] in new_ids), default=None)
        report(
            "sentinel-failover",
            published=len(published),
            publish_failures=len(publishing.failures),
            failure_kinds=sorted(set(publishing.failures)),
            delivered_before_kill=at_kill,
            lost=len(published - set(counts)),
            duplicates=sum(c - 1 for c in counts.values()),
            delivered_without_an_id=len(set(counts) - published),
            kill_to_promotion_s=round(promoted - killed, 2),
            promotion_to_first_delivery_s=round(min(r.at for r in after) - promoted, 2),
            promotion_to_first_new_event_delivered_s=(
                round(first_new - promoted, 2) if first_new else None
            ),
        )
        assert published <= set(counts)
        assert group.password not in worker.log()
        client = redis.Redis(port=new.port, password=group.password or None)
        wait_until(lambda: settled(client, Keys("rw")), what="nothing left pending")
        assert_audit_balances(client, Keys("rw"))
        client.close()
        # Only events whose publish raised may arrive without a returned id.
        assert len(set(counts) - published) <= len(publishing.failures) * publishing.batch
    finally:
        dep.kill_all()


@pytest.mark.timeout(300)
def test_a_failover_to_a_replica_that_missed_writes_stops_the_worker(
    tmp_path: Path, own_group: SentinelGroup, receiver: Receiver
) -> None:
    """The replica is frozen and cut off while 20 events are published (no replica waited for)
    and the worker has seen them counted; the master dies, the replica resumes and is promoted
    without them: the worker finds the store behind and stops, saying so."""
    group = own_group
    dep = Deployment(tmp_path=tmp_path, redis_url=group.url, settings=group.client_env())
    dep.subscriber("s", f"{receiver.url}/s")
    old, replica = group.nodes["master"], group.nodes["replica"]
    try:
        port = metrics_worker(dep)
        worker = dep.workers[0]

        def seen() -> float:
            return samples(scrape_text(port))[("webhooks_store_published_seen", frozenset())]

        with Publisher(producer_settings(group, publish_replicas=0)) as publisher:
            publish_burst(publisher, 5)
            wait_until(lambda: seen() >= 5, what="the worker holding the first count")
            replica.process.send_signal(signal.SIGSTOP)
            master = redis.Redis(port=old.port)
            master.client_kill_filter(_type="replica")  # what it sends now never reaches it
            master.close()
            publish_burst(publisher, 20)
            wait_until(lambda: seen() >= 25, what="the worker holding what the replica missed")
        old.stop(kill=True)
        replica.process.send_signal(signal.SIGCONT)
        wait_until(lambda: group.master_port() == replica.port, timeout_s=60, what="promotion")
        wait_until(
            lambda: "STORE RESET: work stopped" in worker.log(),
            timeout_s=30,
            what="the worker noticing the step back",
        )
        assert "Redis stepped back: " in worker.log()
        assert samples(scrape_text(port))[("webhooks_store_reset", frozenset())] == 1
    finally:
        replica.process.send_signal(signal.SIGCONT)
        dep.kill_all()


def test_publish_cost_of_waiting_for_a_replica(group: SentinelGroup) -> None:
    """One process, loopback: publish calls/s without and with ``WAIT 1``, one event per call
    and 100 per call (best of two rounds each, alternating)."""
    user = sample_user()
    rates: dict[tuple[int, int], float] = {}
    for _round in range(2):
        for batch in (1, 100):
            for replicas in (0, 1):
                settings = producer_settings(group, publish_replicas=replicas)
                with Publisher(settings) as publisher:
                    items = [("reseller.user.created", user)] * batch
                    publisher.publish_batch(items)  # connect first
                    calls, started = 0, time.perf_counter()
                    while time.perf_counter() - started < 1.5:
                        publisher.publish_batch(items)
                        calls += 1
                    rate = calls / (time.perf_counter() - started)
                key = (batch, replicas)
                rates[key] = max(rates.get(key, 0.0), rate)
    for batch in (1, 100):
        without, with_wait = rates[(batch, 0)], rates[(batch, 1)]
        report(
            f"publish-replicas batch={batch}",
            calls_per_s_without_wait=round(without),
            calls_per_s_with_wait_1=round(with_wait),
            cost_per_call_ms=round(1000 / with_wait - 1000 / without, 3),
        )
    assert all(rate > 0 for rate in rates.values())


def test_publish_waits_for_the_replica(group: SentinelGroup) -> None:
    """WAIT really holds publish: with the replica paused, publish answers 503 and says why."""
    replica = group.nodes["replica"]
    with Publisher(producer_settings(group, publish_replicas_timeout_ms=300)) as publisher:
        publisher.user_created(sample_user())
        replica.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(NotReplicatedError) as info:
                publisher.user_created(sample_user())
        finally:
            replica.process.send_signal(signal.SIGCONT)
    assert info.value.status == 503
    assert "0 of 1 Redis replica(s) confirmed it within 300 ms" in str(info.value)


def test_sentinel_settings_that_cannot_work_stop_the_worker_before_ready(
    tmp_path: Path, group: SentinelGroup
) -> None:
    """A wrong or missing Sentinel password, or a master name no Sentinel monitors, is an
    operator's mistake: one line naming the variable, non-zero exit, never "ready"."""
    cases = [
        ({"WEBHOOKS_SENTINEL_PASSWORD": "pw-not-this-one"}, "WEBHOOKS_SENTINEL_PASSWORD: the"),
        ({"WEBHOOKS_SENTINEL_PASSWORD": ""}, "(it asks for one)"),
        ({"WEBHOOKS_SENTINEL_MASTER": "nosuch"}, "monitors no master named 'nosuch'"),
    ]
    deployments = []
    for i, (override, _expected) in enumerate(cases):
        dep = Deployment(
            tmp_path=tmp_path / str(i),
            redis_url=group.url,
            settings={**group.client_env(), **override},
        )
        dep.tmp_path.mkdir()
        dep.config["subscribers"] = []
        deployments.append(dep)
    # The three start side by side; each one's exit is awaited and judged on its own.
    started = [dep.start_worker(wait=False) for dep in deployments]
    try:
        for dep, process, (_override, expected) in zip(deployments, started, cases, strict=True):
            worker, errors = dep.failure(process)
            log = worker.log()
            assert worker.process.returncode != 0, log
            assert len(errors) == 1, log
            assert expected in errors[0]
            assert "pw-not-this-one" not in log  # a password never shows
            assert group.password not in log
            assert " ready." not in log
    finally:
        for dep in deployments:
            dep.kill_all()
