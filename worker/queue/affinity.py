"""Pinning a worker process to one CPU core: off unless asked for, and ``auto`` only where safe.

A worker runs its deliveries on threads, and only one thread at a time runs Python (the GIL).
When the kernel spreads those threads over several cores, every hand-over of the GIL wakes a
thread on another core; pinned to one core, a worker spends less CPU per delivery
(docs/benchmarks.md) and loses nothing, since it never ran Python on two cores at once.

Pinning is opt-in (``WEBHOOKS_CPU_AFFINITY``, default ``off``) because a process often cannot see
who else uses the machine: under a container CPU quota ``sched_getaffinity`` still reports every
core of the node, so workers of two deployments would both take core 0 and share it while the
other cores idle. ``auto`` therefore pins only where the process provably has the machine's cores
to itself (:func:`refusal`): no cgroup CPU quota at any level it can see, and every online core
allowed. Workers on one machine then spread over its cores with one lock file per core
(``flock``, which the kernel releases when the process dies, however it dies). Anywhere else
``auto`` says once why it does not pin and runs unpinned. A core number pins to that core, no
questions asked: the operator's choice. docs/cpu-pinning.md says how to pin deliberately.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from reseller_webhooks.producers.errors import ConfigError

log = logging.getLogger(__name__)

V1_QUOTA = "cpu.cfs_quota_us"
V2_QUOTA = "cpu.max"


def parse_cpu_list(text: str) -> frozenset[int]:
    """The cores of a kernel CPU list such as ``0-3,6`` (``/sys/devices/system/cpu/online``)."""
    cores: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return frozenset(cores)


def format_cpu_list(cores: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cores)) or "none"


@dataclass(frozen=True)
class CpuView:
    """What this process can see of its CPU limits, as read from the kernel.

    ``quotas`` maps each quota file that applies (leaf cgroup first) to its text, None when it
    could not be read; ``controller`` says whether a cgroup CPU controller was found at all.
    """

    quotas: Mapping[str, str | None]
    controller: bool
    allowed: frozenset[int]
    online: frozenset[int]


def quota_of(path: str, text: str) -> str | None:
    """The quota a ``cpu.max`` or ``cpu.cfs_quota_us`` file sets, or None for no quota."""
    value = text.strip()
    if path.endswith(V2_QUOTA):
        return None if value.split(" ")[0] == "max" else value
    return None if value == "-1" else value


def refusal(view: CpuView) -> str | None:
    """Why ``auto`` must not pin this process (None: it may). A pure decision."""
    if not view.controller:
        return "cannot tell whether a CPU quota applies (no cgroup cpu controller found)"
    for path, text in view.quotas.items():
        if text is None:
            return f"cannot tell whether a CPU quota applies (cannot read {path})"
        quota = quota_of(path, text)
        if quota is not None:
            return f"a CPU quota applies ({path}: {quota}), so other processes share these cores"
    if view.allowed != view.online:
        return (
            f"this process may run on cores {format_cpu_list(view.allowed)} only, not on every"
            f" online core ({format_cpu_list(view.online)}): its placement is already chosen"
        )
    if len(view.allowed) < 2:
        return "one core: nothing to gain"
    return None


def choose(setting: str, cpus: Iterable[int]) -> list[int]:
    """The cores worth trying, in order, for a ``cpu_affinity`` setting (a pure decision).

    ``off`` and a single allowed core mean none; ``auto`` means any allowed core (once
    :func:`refusal` found nothing against it); a number (the setting's pattern admits nothing
    else) means that core, which must be allowed.
    """
    allowed = sorted(cpus)
    if setting == "off":
        return []
    if setting == "auto":
        return allowed if len(allowed) > 1 else []
    wanted = int(setting)
    if wanted not in allowed:
        raise ConfigError(
            f"WEBHOOKS_CPU_AFFINITY: core {wanted} is not one this process may run on ({allowed})"
        )
    return [wanted]


@dataclass(frozen=True)
class Mount:
    root: PurePosixPath  # the cgroup the mount shows at its mount point
    point: PurePosixPath
    version: int


def cpu_mount(mountinfo: str) -> Mount | None:
    """Where the cgroup hierarchy holding the CPU controller is mounted (``/proc/self/mountinfo``):
    a v1 hierarchy with ``cpu`` when there is one, else the v2 hierarchy."""
    unified = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        tail = fields[fields.index("-") + 1 :]
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount = (PurePosixPath(fields[3]), PurePosixPath(fields[4]))
        if tail[0] == "cgroup" and "cpu" in tail[2].split(","):
            return Mount(*mount, version=1)
        if tail[0] == "cgroup2" and unified is None:
            unified = Mount(*mount, version=2)
    return unified


def cgroup_path(proc_cgroup: str, version: int) -> PurePosixPath | None:
    """This process's cgroup in the hierarchy of that version (``/proc/self/cgroup``)."""
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if version == 2 and hierarchy == "0" and controllers == "":
            return PurePosixPath(path)
        if version == 1 and "cpu" in controllers.split(","):
            return PurePosixPath(path)
    return None


def quota_dirs(mount: Mount, cgroup: PurePosixPath) -> list[PurePosixPath]:
    """The directories whose quota files apply, from the process's cgroup up to the mount point
    (cgroups above the mount's root are not visible from here)."""
    try:
        relative = cgroup.relative_to(mount.root)
    except ValueError:
        relative = PurePosixPath(".")  # a cgroup namespace: the mount's root is ours
    dirs = [mount.point / relative]
    while dirs[-1] != mount.point:
        dirs.append(dirs[-1].parent)
    return dirs


def allowed_cpus() -> list[int]:
    """The cores this process may run on; none where the OS cannot pin (not Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def read_cpu_view() -> CpuView:
    """What :func:`refusal` decides on, read from ``/proc`` and ``/sys`` (Linux)."""
    allowed = frozenset(allowed_cpus())
    online_text = _read(Path("/sys/devices/system/cpu/online"))
    online = parse_cpu_list(online_text) if online_text else frozenset()
    mount = cpu_mount(_read(Path("/proc/self/mountinfo")) or "")
    cgroup = cgroup_path(_read(Path("/proc/self/cgroup")) or "", mount.version) if mount else None
    if not allowed or mount is None or cgroup is None:
        return CpuView({}, False, allowed, online)
    quotas: dict[str, str | None] = {}
    for directory in quota_dirs(mount, cgroup):
        path = Path(directory)
        file = path / (V2_QUOTA if mount.version == 2 else V1_QUOTA)
        if mount.version == 2 and path.is_dir() and not file.exists():
            continue  # the CPU controller is not enabled at this level: no quota here
        quotas[str(file)] = _read(file)
    return CpuView(quotas, True, allowed, online)


def lock_directories(env: Mapping[str, str]) -> list[Path]:
    """Where the per-core lock files may live, in order: every worker of the machine must pick
    the same one (they do when they run as the same user with the same environment)."""
    dirs = (
        [Path(env["XDG_RUNTIME_DIR"]) / "reseller-webhooks"] if env.get("XDG_RUNTIME_DIR") else []
    )
    dirs.append(Path("/run/reseller-webhooks"))
    dirs.append(Path(tempfile.gettempdir()) / f"reseller-webhooks-{os.getuid()}")
    return dirs


class CoreLock:
    """One core of the machine held by this process: an exclusive ``flock`` on its lock file,
    released by :meth:`release` or by the kernel when the process ends."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cpu: int | None = None
        self._fd: int | None = None

    def acquire(self, candidates: Iterable[int]) -> int | None:
        """Lock the first free core of ``candidates``; None when another process holds each."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for cpu in candidates:
            fd = os.open(self.directory / f"cpu{cpu}.lock", os.O_RDONLY | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fd, self.cpu = fd, cpu
            return cpu
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the lock releases it
            self._fd = None


def pin_process(cpu: int) -> None:
    """Move every thread of this process to ``cpu``; threads started later inherit it."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(tid), {cpu})


def _lock_a_core(candidates: list[int]) -> CoreLock | None:
    for directory in lock_directories(os.environ):
        lock = CoreLock(directory)
        try:
            cpu = lock.acquire(candidates)
        except OSError:
            continue  # not writable here: the next place
        if cpu is None:
            log.info("every core is held by another worker (%s): running unpinned", directory)
            return None
        return lock
    log.warning("no directory for the per-core lock files is writable: running unpinned")
    return None


class CorePin:
    """``WEBHOOKS_CPU_AFFINITY`` applied to this process from :meth:`start` to :meth:`stop`."""

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self.lock: CoreLock | None = None

    @property
    def name(self) -> str:
        return "cpu-pin"

    def start(self) -> None:
        if self.setting == "off":
            return
        view = read_cpu_view()
        if self.setting != "auto":
            cpu = choose(self.setting, view.allowed)[0]
            pin_process(cpu)
            log.info("pinned to CPU core %d (WEBHOOKS_CPU_AFFINITY)", cpu)
            return
        why_not = refusal(view)
        if why_not:
            log.info("WEBHOOKS_CPU_AFFINITY=auto: not pinning: %s", why_not)
            return
        self.lock = _lock_a_core(choose("auto", view.allowed))
        if self.lock is not None and self.lock.cpu is not None:
            pin_process(self.lock.cpu)
            log.info(
                "pinned to CPU core %d, locked in %s (WEBHOOKS_CPU_AFFINITY=auto)",
                self.lock.cpu,
                self.lock.directory,
            )

    def stop(self, timeout_s: float) -> bool:
        """Give the core back to the other workers of the machine (the pin itself stays)."""
        if self.lock is not None:
            self.lock.release()
        return True
