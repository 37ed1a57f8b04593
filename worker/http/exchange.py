"""HTTP/1.1 exchanges over non-blocking sockets, several at once from one thread.

A deliver task sends its chunk's requests concurrently from its own thread (an event loop per
thread, ``Exchanges.run``) instead of one thread blocked in a read per request in flight: threads
parked on sockets each wake and take the interpreter lock on whatever core the kernel picks,
which cost more CPU than the requests themselves (docs/benchmarks.md, change 12).

The guarantees are those of ``transport.GuardedTransport``: names resolve on the shared resolver
threads and every resolved address is vetted before the connect, which goes to the vetted address
(no DNS rebinding window); no proxy; one deadline (a :func:`time.monotonic` instant, which is also
the event loop's clock) bounds the whole exchange, resolution, connects, TLS handshake, writes and
reads together; the response body is read up to a limit. Failures raise httpx's exception classes
(``ConnectTimeout``, ``ReadError``, ...), which ``sender.translate`` maps into the error tree.
Connections are plain sockets, not tied to a loop: any thread may reuse an idle one.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import h11
import httpx

from reseller_webhooks.worker.errors import RefusedAddressError
from reseller_webhooks.worker.http.transport import (
    RESOLVERS,
    IPAddress,
    Resolve,
    address_allowed,
    literal_address,
)

T = TypeVar("T")

#: An idle kept-alive connection older than this is closed rather than reused (httpcore's default).
KEEPALIVE_S = 5.0

#: Idle connections kept per subscriber at most.
MOST_IDLE = 16

READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    excerpt: bytes
    retry_after: str | None


class _Tls:
    """TLS over a non-blocking socket through memory buffers (the loop only moves bytes)."""

    def __init__(self, context: ssl.SSLContext, host: str) -> None:
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_hostname=host)

    async def _flush(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        data = self._out.read()
        if data:
            await loop.sock_sendall(sock, data)

    async def handshake(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush(loop, sock)
                data = await loop.sock_recv(sock, READ_SIZE)
                if not data:
                    raise httpx.ConnectError("connection closed in the TLS handshake") from None
                self._in.write(data)
        await self._flush(loop, sock)

    async def send(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes) -> None:
        self._obj.write(data)
        await self._flush(loop, sock)

    async def recv(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
        while True:
            try:
                return self._obj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                data = await loop.sock_recv(sock, READ_SIZE)
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""  # the peer's end (without close_notify too, as httpcore allows)


@dataclass(eq=False, slots=True)
class _Connection:
    sock: socket.socket
    http: h11.Connection
    tls: _Tls | None
    idle_since: float = 0.0

    async def send(self, loop: asyncio.AbstractEventLoop, data: bytes) -> None:
        if self.tls:
            await self.tls.send(loop, self.sock, data)
        else:
            await loop.sock_sendall(self.sock, data)

    async def recv(self, loop: asyncio.AbstractEventLoop) -> bytes:
        if self.tls:
            return await self.tls.recv(loop, self.sock)
        return await loop.sock_recv(self.sock, READ_SIZE)

    def hung_up(self) -> bool:
        """Readable while idle: the peer closed it (or sent what nobody asked for)."""
        if self.sock.fileno() < 0:
            return True
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        self.sock.close()


@dataclass(eq=False)
class Pool:
    """Idle kept-alive connections to one subscriber, shared by the threads (thread-safe)."""

    _idle: list[_Connection] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    def take(self) -> _Connection | None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if now - conn.idle_since < KEEPALIVE_S and not conn.hung_up():
                return conn
            conn.close()

    def put(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        with self._lock:
            if not self._closed and len(self._idle) < MOST_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for conn in idle:
            conn.close()


class _Phase:
    """What the exchange is doing, for the timeout error when its deadline passes."""

    __slots__ = ("doing", "error")

    def __init__(self) -> None:
        self.error: type[httpx.TimeoutException] = httpx.ConnectTimeout
        self.doing = "timed out before connecting"

    def now(self, error: type[httpx.TimeoutException], doing: str) -> None:
        self.error, self.doing = error, doing


@dataclass(frozen=True, slots=True)
class Target:
    """Where one subscriber's requests go and how, worked out once."""

    url: httpx.URL
    head: list[tuple[bytes, bytes]]  # the request line's headers without the per-request ones
    pool: Pool
    allow_private: bool
    resolve: Resolve
    tls: ssl.SSLContext | None

    @classmethod
    def of(
        cls,
        url: httpx.URL,
        headers: dict[str, str],
        *,
        allow_private: bool,
        resolve: Resolve,
        tls: Callable[[], ssl.SSLContext],
    ) -> Target:
        head = [(b"host", url.netloc)]
        head += [(k.encode(), v.encode()) for k, v in headers.items()]
        context = tls() if url.scheme == "https" else None
        return cls(url, head, Pool(), allow_private, resolve, context)


async def post(
    target: Target, headers: dict[str, str], body: bytes, deadline: float, body_limit: int
) -> Reply:
    """POST ``body`` to the target by ``deadline``; at most ``body_limit`` bytes of the response
    body are read. Raises httpx's exceptions (and ``RefusedAddressError``)."""
    phase = _Phase()
    try:
        async with asyncio.timeout_at(deadline):
            conn = target.pool.take() or await _connect(target, phase)
            return await _exchange(target, conn, headers, body, body_limit, phase)
    except TimeoutError as exc:
        raise phase.error(phase.doing) from exc


async def _connect(target: Target, phase: _Phase) -> _Connection:
    loop = asyncio.get_running_loop()
    host, port = target.url.host, target.url.port or (443 if target.tls else 80)
    addresses = await _addresses(target, host, port, phase)
    if not target.allow_private:
        refused = [a for a in addresses if not address_allowed(a)]
        if refused:
            raise RefusedAddressError(
                f"{host} resolves to {refused[0]}, a loopback, private, link-local,"
                " reserved or zoned address; set allow_private_networks: true to allow it"
            )
    last: Exception = httpx.ConnectError(f"no address for {host}")
    for address in addresses:  # all of them share the one deadline
        phase.now(httpx.ConnectTimeout, f"timed out connecting to {address}")
        sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (str(address), port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            sock.close()
            last = httpx.ConnectError(f"cannot connect to {address}: {exc}")
            continue
        except BaseException:
            sock.close()
            raise
        return await _secure(target, sock, phase)
    raise last


async def _addresses(target: Target, host: str, port: int, phase: _Phase) -> list[IPAddress]:
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    phase.now(httpx.ConnectTimeout, f"timed out resolving {host}")
    future = RESOLVERS.submit(target.resolve, host, port)
    try:
        resolved: Sequence[IPAddress] = await asyncio.wrap_future(future)
    except OSError as exc:
        raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from exc
    if not resolved:
        raise httpx.ConnectError(f"cannot resolve {host}: no address")
    return list(resolved)


async def _secure(target: Target, sock: socket.socket, phase: _Phase) -> _Connection:
    """The connection over ``sock``, after the TLS handshake for an https target."""
    tls = None
    try:
        if target.tls is not None:
            phase.now(httpx.ConnectTimeout, "timed out in the TLS handshake")
            tls = _Tls(target.tls, target.url.host)
            await tls.handshake(asyncio.get_running_loop(), sock)
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise httpx.ConnectError(str(exc)) from exc
    except BaseException:
        sock.close()
        raise
    return _Connection(sock, h11.Connection(h11.CLIENT), tls)


async def _exchange(
    target: Target,
    conn: _Connection,
    headers: dict[str, str],
    body: bytes,
    body_limit: int,
    phase: _Phase,
) -> Reply:
    loop = asyncio.get_running_loop()
    reusable = False
    try:
        head = [*target.head, (b"content-length", str(len(body)).encode())]
        head += [(k.encode(), v.encode()) for k, v in headers.items()]
        request = h11.Request(method="POST", target=target.url.raw_path, headers=head)
        parts = [conn.http.send(request) or b""]
        parts += conn.http.send_with_data_passthrough(h11.Data(data=body)) or []
        parts.append(conn.http.send(h11.EndOfMessage()) or b"")
        phase.now(httpx.WriteTimeout, "timed out sending the request")
        if len(body) <= READ_SIZE:  # one write; a large body goes as it is, never copied
            parts = [b"".join(parts)]
        for part in parts:
            await _io(conn.send(loop, part), httpx.WriteError)
        phase.now(httpx.ReadTimeout, "timed out reading the response")
        reply, reusable = await _read(loop, conn, body_limit)
        return reply
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc)) from exc
    finally:
        if reusable:
            conn.http.start_next_cycle()
            target.pool.put(conn)
        else:
            conn.close()


async def _read(
    loop: asyncio.AbstractEventLoop, conn: _Connection, body_limit: int
) -> tuple[Reply, bool]:
    """The response, and whether the connection may carry another request."""
    status, retry_after, excerpt = 0, None, bytearray()
    while True:
        event = conn.http.next_event()
        if event is h11.NEED_DATA:
            conn.http.receive_data(await _io(conn.recv(loop), httpx.ReadError))
        elif isinstance(event, h11.Response):
            status = event.status_code
            retry_after = next(
                (v.decode("latin-1") for k, v in event.headers if k == b"retry-after"), None
            )
        elif isinstance(event, h11.Data):
            excerpt += event.data[: body_limit - len(excerpt)]
            if len(excerpt) >= body_limit:  # the rest is never read: the connection goes
                return Reply(status, bytes(excerpt), retry_after), False
        elif isinstance(event, h11.EndOfMessage):
            done = conn.http.our_state is h11.DONE and conn.http.their_state is h11.DONE
            return Reply(status, bytes(excerpt), retry_after), done
        elif isinstance(event, h11.ConnectionClosed):
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")


async def _io(operation: Awaitable[T], error: type[httpx.TransportError]) -> T:
    """A socket operation; its ``OSError`` as ``error``."""
    try:
        return await operation
    except TimeoutError:
        raise
    except OSError as exc:
        raise error(str(exc) or type(exc).__name__) from exc


_LOOPS = threading.local()
_MADE: list[asyncio.AbstractEventLoop] = []
_MADE_LOCK = threading.Lock()


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop, made on first use and kept until :func:`close_loops`."""
    loop: asyncio.AbstractEventLoop | None = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = _LOOPS.loop = asyncio.new_event_loop()
        with _MADE_LOCK:
            _MADE.append(loop)
    return loop


def close_loops() -> None:
    """Close every thread's loop (each holds a selector and a socket pair); for a stopping
    worker, once no attempt runs. A thread that sends again gets a new one."""
    with _MADE_LOCK:
        made, _MADE[:] = list(_MADE), []
    for loop in made:
        if not loop.is_running():
            loop.close()
