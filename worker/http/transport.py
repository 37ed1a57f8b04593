"""HTTP transport that vets the address it actually connects to and keeps one deadline per request.

Address vetting (SSRF): names are resolved here, every resolved address is checked, and the
connection is made to a vetted address, so there is no window between the check and the connect
(DNS rebinding). Proxies from the environment are ignored: a proxy would connect on our behalf,
unchecked.

Deadline: httpcore's timeouts are per phase and per socket operation, so a peer that sends one
byte just inside each read timeout can hold a request open for ever. A request made through
:meth:`GuardedTransport.exchange` with a deadline (a :func:`time.monotonic` instant) is bounded
as a whole instead: name
resolution, every connect, the TLS handshake, each write and each read get at most the time left,
and a phase that starts after the deadline fails at once with that phase's timeout error.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import ipaddress
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, cast

import httpcore
import httpx

from reseller_webhooks.worker.errors import RefusedAddressError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Resolves a host name to the addresses to try, in order. Injectable, e.g. to simulate a slow DNS.
Resolve = Callable[[str, int], Sequence[IPAddress]]

# --- Address rules -------------------------------------------------------------------------------

_V6 = ipaddress.IPv6Network
_V4s = tuple[ipaddress.IPv4Address, ...]


def _low32(ip: ipaddress.IPv6Address) -> _V4s:
    return (ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF),)


def _sixtofour(ip: ipaddress.IPv6Address) -> _V4s:
    return (ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFF_FFFF),)


def _teredo(ip: ipaddress.IPv6Address) -> _V4s:
    server = ipaddress.IPv4Address((int(ip) >> 64) & 0xFFFF_FFFF)
    client = ipaddress.IPv4Address(~int(ip) & 0xFFFF_FFFF)
    return (server, client)


#: IPv6 forms that carry IPv4 addresses, and where: allowed only if every embedded IPv4 is.
_TRANSITION: tuple[tuple[ipaddress.IPv6Network, Callable[[ipaddress.IPv6Address], _V4s]], ...] = (
    (_V6("::ffff:0:0/96"), _low32),  # IPv4-mapped
    (_V6("64:ff9b::/96"), _low32),  # NAT64, well-known prefix (RFC 6052)
    (_V6("64:ff9b:1::/96"), _low32),  # NAT64, local-use prefix (RFC 8215) laid out as a /96
    (_V6("2002::/16"), _sixtofour),  # 6to4: the IPv4 in bits 16-47
    (_V6("2001::/32"), _teredo),  # Teredo: the server, and the client with its bits inverted
)

#: Refused whatever the Python version's address registry says: deprecated or ambiguous.
_REFUSED_V6 = (
    _V6("::/96"),  # IPv4-compatible (deprecated, RFC 4291), :: and ::1 among them
    _V6("::ffff:0:0:0/96"),  # IPv4-translated (SIIT), never routed on the internet
    _V6("64:ff9b:1::/48"),  # local-use NAT64 laid out other than as a /96: the IPv4 is not known
    _V6("fec0::/10"),  # site-local (deprecated, RFC 3879)
)


def address_allowed(ip: IPAddress) -> bool:
    """Only globally routable unicast addresses: no loopback, private, link-local (cloud metadata
    at 169.254.169.254 included), shared, reserved or multicast ranges, checked through every
    transition form that embeds an IPv4 address, and no address with a zone id."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_global and not ip.is_multicast
    if ip.scope_id:
        return False  # a zone only means something on a link, never on a public address
    for network, embedded in _TRANSITION:
        if ip in network:
            return all(address_allowed(v4) for v4 in embedded(ip))
    if any(ip in network for network in _REFUSED_V6):
        return False
    return ip.is_global and not ip.is_multicast


# --- The deadline --------------------------------------------------------------------------------

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


def _time_left(timeout: float | None, error: type[Exception], doing: str) -> float | None:
    """The phase timeout, shortened to what is left of the request's deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error(f"deadline passed {doing}")
    return left if timeout is None else min(timeout, left)


class _Within:
    """Runs a block with the request's deadline visible to the backend and its streams."""

    __slots__ = ("_deadline", "_token")

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline

    def __enter__(self) -> None:
        self._token = _deadline.set(self._deadline)

    def __exit__(self, *exc: object) -> None:
        _deadline.reset(self._token)


# --- Name resolution -----------------------------------------------------------------------------


def system_resolve(host: str, port: int) -> list[IPAddress]:
    """The system resolver (``getaddrinfo``), addresses de-duplicated in the order given."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))


class _ResolverPool:
    """``getaddrinfo`` cannot be interrupted: it runs on a few threads, and the caller waits
    only as long as its deadline allows. Re-created after a fork (threads do not survive one)."""

    def __init__(self, workers: int = 8) -> None:
        self._workers = workers
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def submit(self, resolve: Resolve, host: str, port: int) -> Future[Sequence[IPAddress]]:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="resolve")
                self._pid = os.getpid()
            return self._pool.submit(resolve, host, port)


_RESOLVERS = _ResolverPool()


# --- Backend and stream --------------------------------------------------------------------------


#: Request bytes up to this size wait for the first read and go out in one ``send``.
COALESCE_BYTES = 65536


class DeadlineStream(httpcore.NetworkStream):
    """A socket whose every operation waits at most the phase timeout and the time left.

    A request's head and body, written one after the other, go out together when the response
    is first read (or once they pass :data:`COALESCE_BYTES`): one system call, and one hand-over
    of the GIL, instead of two. A failure to send them is raised as the write's own error, a
    broken pipe suppressed as httpcore does for its writes (the response may still be read)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = bytearray()
        self._pending_timeout: float | None = None

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._pending:
            # As httpcore does with its writes: the peer may have answered before closing.
            with contextlib.suppress(httpcore.WriteError):
                self._send_pending()
        wait = _time_left(timeout, httpcore.ReadTimeout, "while reading the response")
        try:
            self._sock.settimeout(wait)
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("timed out reading the response") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._pending_timeout = timeout
        if len(self._pending) + len(buffer) < COALESCE_BYTES:
            self._pending += buffer
        else:
            self._send_pending(buffer)

    def _send_pending(self, more: bytes = b"") -> None:
        head = bytes(self._pending)
        self._pending.clear()
        # A large body goes out as it is, not copied behind the head.
        for part in (head, more) if len(more) >= COALESCE_BYTES else (head + more,):
            self._send(memoryview(part), self._pending_timeout)

    def _send(self, view: memoryview, timeout: float | None) -> None:
        try:
            while view:
                # Again for every send: a peer that reads a little at a time gets no extension.
                wait = _time_left(timeout, httpcore.WriteTimeout, "while sending the request")
                self._sock.settimeout(wait)
                view = view[self._sock.send(view) :]
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("timed out sending the request") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        try:
            # CPython bounds the whole handshake by the socket timeout, not each read within it.
            self._sock.settimeout(
                _time_left(timeout, httpcore.ConnectTimeout, "before the TLS handshake")
            )
            tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname)
        except BaseException as exc:
            self._sock.close()
            if isinstance(exc, TimeoutError):
                raise httpcore.ConnectTimeout("timed out in the TLS handshake") from exc
            if isinstance(exc, OSError):
                raise httpcore.ConnectError(str(exc)) from exc
            raise
        return DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock._sslobj  # type: ignore[attr-defined]  # as httpcore's own stream
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":  # an idle kept-alive connection the peer has closed
            if self._sock.fileno() < 0:
                return True
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        return None


class GuardedBackend(httpcore.NetworkBackend):
    """Resolves, vets and connects by address, within the request's deadline."""

    def __init__(self, *, allow_private: bool, resolve: Resolve = system_resolve) -> None:
        self._allow_private = allow_private
        self._resolve = resolve

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._addresses(host, port, timeout)
        if not self._allow_private:
            refused = [a for a in addresses if not address_allowed(a)]
            if refused:
                raise RefusedAddressError(
                    f"{host} resolves to {refused[0]}, a loopback, private, link-local,"
                    " reserved or zoned address; set allow_private_networks: true to allow it"
                )
        source = None if local_address is None else (local_address, 0)
        last: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in addresses:  # all of them share the one deadline
            wait = _time_left(timeout, httpcore.ConnectTimeout, f"connecting to {host}")
            try:
                sock = socket.create_connection((str(address), port), wait, source)
            except TimeoutError as exc:
                last = httpcore.ConnectTimeout(f"timed out connecting to {address}")
                last.__cause__ = exc
                continue
            except OSError as exc:
                last = httpcore.ConnectError(f"cannot connect to {address}: {exc}")
                last.__cause__ = exc
                continue
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                sock.close()
                raise httpcore.ConnectError(str(exc)) from exc
            return DeadlineStream(sock)
        raise last

    def _addresses(self, host: str, port: int, timeout: float | None) -> Sequence[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]  # a literal: nothing to resolve
        except ValueError:
            pass
        wait = _time_left(timeout, httpcore.ConnectTimeout, f"resolving {host}")
        future = _RESOLVERS.submit(self._resolve, host, port)
        try:
            addresses = future.result(wait)
        except FutureTimeout as exc:
            future.cancel()
            raise httpcore.ConnectTimeout(f"timed out resolving {host}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}: no address")
        return addresses

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise RefusedAddressError("unix sockets are not a webhook destination")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one TLS client context of this process: the system's defaults with certifi's CA
    bundle, the environment ignored. Built once and shared by every connection: loading the CA
    bundle is what makes a context weigh hundreds of kilobytes, and subscribers have no TLS
    settings of their own (docs/sizing.md)."""
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connections go through :class:`GuardedBackend`; its
    :meth:`exchange` ends a request by its deadline. One connection pool, keyed by origin, with
    the shared :func:`tls_context`."""

    def __init__(
        self, *, allow_private: bool, limits: httpx.Limits, resolve: Resolve = system_resolve
    ) -> None:
        context = tls_context()
        # Given the context, httpx builds none of its own; its pool is replaced just below.
        super().__init__(verify=context, trust_env=False, limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_private=allow_private, resolve=resolve),
        )

    def exchange(
        self, request: httpcore.Request, deadline: float, body_limit: int
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """One request handed to the pool as it is (no ``httpx.Request`` or ``Response`` around
        it), ended by ``deadline``: the status, the body's first ``body_limit`` bytes (the rest
        is not read) and the headers. Raises httpcore's exceptions."""
        timeouts = request.extensions["timeout"]
        left = max(deadline - time.monotonic(), 0.0)
        timeouts["pool"] = left if timeouts.get("pool") is None else min(timeouts["pool"], left)
        with _Within(deadline):
            response = self._pool.handle_request(request)
            try:
                received = bytearray()
                for chunk in cast(Iterable[bytes], response.stream):
                    received += chunk[: body_limit - len(received)]
                    if len(received) >= body_limit:
                        break
            finally:
                response.close()
        return response.status, bytes(received), response.headers
