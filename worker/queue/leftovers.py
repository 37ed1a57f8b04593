"""What a worker process still holds once it has stopped: threads and sockets.

Logged as the process exits (``queue.lifecycle``), from what the interpreter and the kernel
report rather than from the worker's own bookkeeping, so a part that was never stopped shows up
by name. The sockets are this process's file descriptors matched against ``/proc/self/net``.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Sequence
from pathlib import Path

#: TCP states of ``/proc/net/tcp`` worth naming.
_STATES = {"01": "to", "0A": "listening on"}


def _address(hex_address: str) -> str:
    """``0100007F:18EB`` (``/proc/net/tcp``) as ``127.0.0.1:6379``; IPv6 likewise."""
    host, _, port = hex_address.partition(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word in host (little-endian) order.
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(packed)
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"{shown}:{int(port, 16)}"


def parse_proc_net_tcp(text: str) -> dict[int, str]:
    """Socket inode -> what it is (``tcp to 127.0.0.1:6379``), from ``/proc/net/tcp{,6}``."""
    sockets: dict[int, str] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        how = _STATES.get(state)
        if how == "listening on":
            sockets[inode] = f"tcp listening on {_address(local)}"
        else:
            sockets[inode] = f"tcp {how or 'closing, to'} {_address(remote)}"
    return sockets


def open_sockets() -> list[str] | None:
    """This process's open sockets, described; None where ``/proc`` is not there."""
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return None
    known: dict[int, str] = {}
    for table in ("tcp", "tcp6"):
        try:
            known.update(parse_proc_net_tcp(Path(f"/proc/self/net/{table}").read_text()))
        except OSError:
            continue
    found = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue  # the descriptor of the listing itself, closed meanwhile
        if target.startswith("socket:["):
            found.append(known.get(int(target[8:-1]), "socket (not TCP)"))
    return sorted(found)


def other_threads() -> list[str]:
    """Names of the live threads other than the calling one."""
    me = threading.current_thread()
    return sorted(t.name for t in threading.enumerate() if t is not me)


def describe(threads: Sequence[str], sockets: Sequence[str] | None) -> str:
    """One line for the log, e.g. ``no thread, no socket`` (a pure function)."""
    thread_part = f"threads {', '.join(threads)}" if threads else "no thread"
    if sockets is None:
        socket_part = "sockets unknown"
    elif sockets:
        socket_part = f"sockets {', '.join(sockets)}"
    else:
        socket_part = "no socket"
    return f"{thread_part}, {socket_part}"
