"""One core per worker process: the setting's rule, the claims in Redis, and a real worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.queue.affinity import CoreClaim, choose, machine_id
from tests.helpers import Deployment, wait_until


@pytest.mark.parametrize(
    ("setting", "cpus", "expected"),
    [
        ("auto", [0, 1, 2, 3], [0, 1, 2, 3]),
        ("auto", [2, 5], [2, 5]),
        ("auto", [0], []),  # one core allowed: nothing to gain
        ("off", [0, 1], []),
        ("1", [0, 1], [1]),
        ("0", [0], [0]),
    ],
)
def test_choose(setting: str, cpus: list[int], expected: list[int]) -> None:
    assert choose(setting, cpus) == expected


@pytest.mark.parametrize("cpus", [[0, 1], []])  # [] where the OS cannot pin
def test_choose_refuses_a_core_the_process_may_not_run_on(cpus: list[int]) -> None:
    with pytest.raises(ConfigError, match="core 3 is not one this process may run on"):
        choose("3", cpus)


def test_claims_share_out_cores_and_give_them_back(rdb: redis.Redis, keys: Keys) -> None:
    first, second, third = (CoreClaim(rdb, keys, ttl_s=5) for _ in range(3))
    assert first.acquire([0, 1]) == 0
    assert second.acquire([0, 1]) == 1
    assert third.acquire([0, 1]) is None  # every core taken: the worker runs unpinned
    key = keys.cpu_claim(machine_id(), 0)
    assert 0 < rdb.pttl(key) <= 5000
    first.release()
    assert not rdb.exists(key)
    assert third.acquire([0, 1]) == 0
    second.release()
    third.release()


def test_a_lapsed_claim_is_taken_over(rdb: redis.Redis, keys: Keys) -> None:
    """A worker killed without releasing holds its core only until the claim's TTL."""
    key = keys.cpu_claim(machine_id(), 0)
    rdb.set(key, "token-of-a-killed-worker", px=200)  # its last refresh, never renewed
    successor = CoreClaim(rdb, keys, ttl_s=5)
    assert successor.acquire([0]) is None
    wait_until(lambda: not rdb.exists(key), timeout_s=5, what="the claim to lapse")
    assert successor.acquire([0]) == 0
    successor.release()


def _cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


def test_workers_are_pinned_to_distinct_cores(
    deployment: Deployment, rdb: redis.Redis, keys: Keys
) -> None:
    deployment.subscriber("a", "http://127.0.0.1:9/hook")
    deployment.settings["WEBHOOKS_CPU_AFFINITY"] = "auto"
    one, two = deployment.start_worker(), deployment.start_worker()
    allowed = [_cpus_allowed(w.process.pid) for w in (one, two)]
    if len(os.sched_getaffinity(0)) < 2:  # one core: nothing to gain, nothing done
        assert allowed == [_cpus_allowed(os.getpid())] * 2
        return
    assert all(a.isdigit() for a in allowed)
    assert allowed[0] != allowed[1]
    assert f"pinned to CPU core {allowed[0]}, claimed in Redis" in one.log()
    claim = keys.cpu_claim(machine_id(), int(allowed[0]))
    assert rdb.exists(claim)
    one.stop()  # a stopped worker gives its core back
    assert not rdb.exists(claim)


def test_affinity_off_leaves_the_worker_alone(deployment: Deployment) -> None:
    deployment.subscriber("a", "http://127.0.0.1:9/hook")
    deployment.settings["WEBHOOKS_CPU_AFFINITY"] = "off"
    worker = deployment.start_worker()
    assert _cpus_allowed(worker.process.pid) == _cpus_allowed(os.getpid())
    assert "pinned" not in worker.log()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("99", "WEBHOOKS_CPU_AFFINITY: core 99 is not one this process may run on"),
        ("fast", "WEBHOOKS_CPU_AFFINITY: String should match pattern"),
    ],
)
def test_a_bad_affinity_stops_the_worker_at_start(
    deployment: Deployment, value: str, message: str
) -> None:
    deployment.subscriber("a", "http://127.0.0.1:9/hook")
    deployment.settings["WEBHOOKS_CPU_AFFINITY"] = value
    run = deployment.cli("worker")
    assert run.returncode != 0
    assert message in run.stderr + run.stdout


def test_a_claim_lost_with_redis_is_taken_again(rdb: redis.Redis, keys: Keys) -> None:
    """Redis restarted without the claim: the worker claims its core again on the next refresh."""
    claim = CoreClaim(rdb, keys, ttl_s=1.5)
    assert claim.acquire([0]) == 0
    key = keys.cpu_claim(machine_id(), 0)
    rdb.delete(key)
    wait_until(lambda: rdb.exists(key), timeout_s=5, what="the core claimed again")
    assert CoreClaim(rdb, keys).acquire([0]) is None
    claim.release()
    assert not rdb.exists(key)
