"""CPU pinning: off by default; ``auto`` only where no quota applies and every core is allowed,
spread over the machine's cores with per-core lock files; the decisions table-tested, and real
workers."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.worker.queue.affinity import (
    CoreLock,
    CpuView,
    Mount,
    cgroup_path,
    choose,
    cpu_mount,
    lock_directories,
    parse_cpu_list,
    quota_dirs,
    read_cpu_view,
    refusal,
)
from tests.helpers import Deployment, WorkerProcess

FOUR = frozenset({0, 1, 2, 3})


@pytest.mark.parametrize(
    ("setting", "cpus", "expected"),
    [
        ("auto", [0, 1, 2, 3], [0, 1, 2, 3]),
        ("auto", [5, 2], [2, 5]),
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


@pytest.mark.parametrize(
    ("text", "cores"),
    [("0-3", {0, 1, 2, 3}), ("0", {0}), ("0-1,4,6-7\n", {0, 1, 4, 6, 7}), ("", set())],
)
def test_parse_cpu_list(text: str, cores: set[int]) -> None:
    assert parse_cpu_list(text) == cores


V2 = "/sys/fs/cgroup/kubepods/pod1/cpu.max"
V1 = "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"


@pytest.mark.parametrize(
    ("quotas", "controller", "allowed", "why_not"),
    [
        ({V2: "max 100000\n", "/sys/fs/cgroup/cpu.max": "max 100000"}, True, FOUR, None),
        ({V1: "-1\n"}, True, FOUR, None),
        ({}, True, FOUR, None),  # cgroup v2 without the cpu controller enabled anywhere
        # A container limited to 2 CPUs still sees every core of the node: no pin.
        ({V2: "200000 100000\n"}, True, FOUR, f"a CPU quota applies ({V2}: 200000 100000)"),
        ({V2: "max 100000", "/sys/fs/cgroup/kubepods/cpu.max": "400000 100000"}, True, FOUR,
         "a CPU quota applies (/sys/fs/cgroup/kubepods/cpu.max: 400000 100000)"),
        ({V1: "50000"}, True, FOUR, f"a CPU quota applies ({V1}: 50000)"),
        ({V1: None}, True, FOUR, f"cannot tell whether a CPU quota applies (cannot read {V1})"),
        ({}, False, FOUR, "cannot tell whether a CPU quota applies (no cgroup cpu controller"),
        # docker --cpuset-cpus, Kubernetes' static CPU manager: placed already.
        ({V1: "-1"}, True, frozenset({2, 3}), "may run on cores 2,3 only, not on every online"),
        ({V1: "-1"}, True, frozenset({0}), "may run on cores 0 only"),
    ],
)  # fmt: skip
def test_refusal(
    quotas: dict[str, str | None], controller: bool, allowed: frozenset[int], why_not: str | None
) -> None:
    decided = refusal(CpuView(quotas, controller, allowed, FOUR))
    if why_not is None:
        assert decided is None
    else:
        assert decided is not None
        assert why_not in decided


def test_one_core_online_is_nothing_to_gain() -> None:
    one = frozenset({0})
    assert refusal(CpuView({V1: "-1"}, True, one, one)) == "one core: nothing to gain"


def mount(root: str, point: str, version: int) -> Mount:
    return Mount(PurePosixPath(root), PurePosixPath(point), version)


HYBRID = """\
25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
31 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
32 25 0:29 / /sys/fs/cgroup/cpuset rw,relatime shared:14 - cgroup cgroup rw,cpuset
"""
UNIFIED = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
NAMESPACED_V1 = "40 38 0:31 /docker/abc /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu\n"


@pytest.mark.parametrize(
    ("mountinfo", "expected"),
    [
        (HYBRID, mount("/", "/sys/fs/cgroup/cpu,cpuacct", 1)),
        (UNIFIED, mount("/", "/sys/fs/cgroup", 2)),
        (NAMESPACED_V1, mount("/docker/abc", "/sys/fs/cgroup/cpu", 1)),
        ("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n", None),
    ],
)
def test_cpu_mount(mountinfo: str, expected: Mount | None) -> None:
    assert cpu_mount(mountinfo) == expected


@pytest.mark.parametrize(
    ("proc_cgroup", "version", "expected"),
    [
        ("0::/system.slice/webhooks.service\n", 2, "/system.slice/webhooks.service"),
        ("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n", 1, "/docker/abc"),
        ("4:memory:/x\n3:cpuset:/y\n", 1, None),
    ],
)
def test_cgroup_path(proc_cgroup: str, version: int, expected: str | None) -> None:
    found = cgroup_path(proc_cgroup, version)
    assert (str(found) if found else None) == expected


@pytest.mark.parametrize(
    ("mount", "cgroup", "expected"),
    [
        (
            mount("/", "/sys/fs/cgroup", 2),
            "/kubepods/pod1/c1",
            ["kubepods/pod1/c1", "kubepods/pod1", "kubepods", ""],
        ),
        (mount("/", "/sys/fs/cgroup", 2), "/", [""]),
        # Mounted from inside the container's cgroup: only its own level is visible.
        (mount("/docker/abc", "/sys/fs/cgroup", 1), "/docker/abc", [""]),
        (mount("/docker/abc", "/sys/fs/cgroup", 1), "/", [""]),
    ],
)
def test_quota_dirs(mount: Mount, cgroup: str, expected: list[str]) -> None:
    dirs = quota_dirs(mount, PurePosixPath(cgroup))
    assert dirs == [mount.point / e if e else mount.point for e in expected]


def test_lock_directories_prefer_the_runtime_dir() -> None:
    assert lock_directories({"XDG_RUNTIME_DIR": "/run/user/1000"})[:2] == [
        Path("/run/user/1000/reseller-webhooks"),
        Path("/run/reseller-webhooks"),
    ]
    assert lock_directories({})[0] == Path("/run/reseller-webhooks")


def test_core_locks_share_out_cores_and_give_them_back(tmp_path: Path) -> None:
    first, second, third = (CoreLock(tmp_path) for _ in range(3))
    assert first.acquire([0, 1]) == 0
    assert second.acquire([0, 1]) == 1
    assert third.acquire([0, 1]) is None  # every core taken: the worker runs unpinned
    first.release()
    assert third.acquire([0, 1]) == 0
    second.release()
    third.release()


def _cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


@pytest.fixture
def auto(deployment: Deployment, tmp_path: Path) -> Deployment:
    """Workers with ``auto`` and lock files of their own (other test runs on this machine do not
    take their cores)."""
    deployment.subscriber("a", "http://127.0.0.1:9/hook")
    deployment.settings["WEBHOOKS_CPU_AFFINITY"] = "auto"
    deployment.settings["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    return deployment


def _pinned_core(worker: WorkerProcess) -> int:
    allowed = _cpus_allowed(worker.process.pid)
    assert allowed.isdigit(), allowed
    assert f"pinned to CPU core {allowed}, locked in" in worker.log()
    return int(allowed)


def test_workers_with_auto_are_pinned_to_distinct_cores_and_a_killed_ones_is_free_again(
    auto: Deployment,
) -> None:
    one, two = auto.start_worker(), auto.start_worker()
    why_not = refusal(read_cpu_view())
    if why_not is not None:  # under a quota, or placed already: each says so and stays unpinned
        for worker in (one, two):
            assert _cpus_allowed(worker.process.pid) == _cpus_allowed(os.getpid())
            assert f"WEBHOOKS_CPU_AFFINITY=auto: not pinning: {why_not}" in worker.log()
        return
    first, second = _pinned_core(one), _pinned_core(two)
    assert first != second
    one.kill()  # SIGKILL: the kernel releases its lock
    three = auto.start_worker()
    assert _pinned_core(three) == first


def test_by_default_the_worker_is_not_pinned(deployment: Deployment) -> None:
    deployment.subscriber("a", "http://127.0.0.1:9/hook")
    deployment.settings.pop("WEBHOOKS_CPU_AFFINITY", None)
    env_setting = os.environ.get("WEBHOOKS_CPU_AFFINITY")
    if env_setting is not None:
        pytest.skip(f"WEBHOOKS_CPU_AFFINITY={env_setting} in this environment")
    worker = deployment.start_worker()
    assert _cpus_allowed(worker.process.pid) == _cpus_allowed(os.getpid())
    # Not "pinn" alone: the log names files under the checkout, whose path may hold the word.
    assert "pinned to CPU core" not in worker.log()
    assert "WEBHOOKS_CPU_AFFINITY" not in worker.log()


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
