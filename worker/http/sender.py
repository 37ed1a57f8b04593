"""One HTTP attempt to one subscriber: sign, POST the exact bytes, read a bounded response.

Lower-layer exceptions are translated into the error tree here and only here.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx

from reseller_webhooks.worker.config.subscribers import Subscriber, SubscribersConfig
from reseller_webhooks.worker.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from reseller_webhooks.worker.http.exchange import Target, post, thread_loop
from reseller_webhooks.worker.http.signing import Signer
from reseller_webhooks.worker.http.transport import Resolve, system_resolve

USER_AGENT = "reseller-webhooks/0.1"

K = TypeVar("K")

#: Beyond its deadline, the most an attempt may take to notice and unwind: a blocked socket call
#: wakes at the deadline (measured: within tens of milliseconds, tests/test_hostile_peers.py);
#: the rest is headroom for a loaded machine.
ATTEMPT_SLACK_S = 1.0


def attempt_bound_s(timeout_s: float) -> float:
    """The longest :meth:`Sender.attempt` runs for a subscriber with this ``timeout_s``, whatever
    the peer or its name server do: one deadline for every phase, no second try inside."""
    return timeout_s + ATTEMPT_SLACK_S


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt observed. ``status`` is None when no response came back."""

    status: int | None
    duration_ms: float
    response_excerpt: str = ""
    retry_after: str | None = None
    error: DeliveryError | None = None

    @property
    def error_text(self) -> str | None:
        return f"{type(self.error).__name__}: {self.error}" if self.error else None


def translate(exc: Exception) -> DeliveryError:
    """The one place where transport exceptions become :class:`DeliveryError`."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return RetryableDeliveryError(f"timed out ({type(exc).__name__}: {exc})")
    if isinstance(exc, httpx.TransportError) and not isinstance(
        exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError
    ):
        return RetryableDeliveryError(f"{type(exc).__name__}: {exc}")
    return PermanentDeliveryError(f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class _Route:
    """Everything about one subscriber that does not change between attempts, built once."""

    target: Target
    signer: Signer


def _fixed_headers(sub: Subscriber, url: httpx.URL) -> dict[str, str]:
    """Headers every request to ``sub`` carries: its own, then ours, then basic auth from the
    URL's credentials (as ``httpx.Client`` would add them), computed once."""
    headers = {**sub.headers, "content-type": "application/json", "user-agent": USER_AGENT}
    if url.username or url.password:
        flow = httpx.BasicAuth(url.username, url.password).sync_auth_flow(
            httpx.Request("POST", url)
        )
        headers["authorization"] = next(flow).headers["authorization"]
    return headers


#: One attempt to make: a key of the caller's, the ``webhook-id`` and the body.
Job = tuple[K, str, bytes]


class Sender:
    """Kept-alive connections and a signer per subscriber. Thread-safe.

    Attempts go out over ``http.exchange``: a chunk's requests concurrently from the calling
    thread, each vetted and bounded as ``transport.GuardedTransport`` does, with no
    ``httpx.Client`` merging headers, cookies, auth and redirect settings on every call
    (docs/benchmarks.md, changes 5 and 12).
    """

    def __init__(
        self,
        config: SubscribersConfig,
        *,
        body_limit: int = 4096,
        clock: Callable[[], float] = time.time,
        resolve: Resolve = system_resolve,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """``tls_context``: the certificates https subscribers are verified against (default:
        the bundled public CAs, nothing from the environment)."""
        self._body_limit = body_limit
        self._clock = clock
        self._tls = tls_context
        self._routes: dict[str, _Route] = {}
        for sub in config.subscribers:
            url = httpx.URL(str(sub.url))
            target = Target.of(
                url,
                _fixed_headers(sub, url),
                allow_private=config.allow_private_networks,
                resolve=resolve,
                tls=self._tls_context,
            )
            self._routes[sub.id] = _Route(target, Signer(sub.signing_keys))

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = httpx.create_ssl_context(trust_env=False)
        return self._tls

    def close(self) -> None:
        for route in self._routes.values():
            route.target.pool.close()

    def attempt(self, sub: Subscriber, webhook_id: str, body: bytes) -> AttemptResult:
        """Make one attempt, over by ``attempt_bound_s(sub.timeout_s)``; never raises for delivery
        problems (they are in the result)."""
        [(_, result)] = self.attempts(sub, [(None, webhook_id, body)], width=1)
        return result

    def attempts(
        self, sub: Subscriber, jobs: Iterable[Job[K]], *, width: int
    ) -> Iterator[tuple[K, AttemptResult]]:
        """Attempt ``jobs`` with up to ``width`` in flight at once, from this thread; yields each
        result as it comes. ``jobs`` is read only when a place is free, so the caller may decide
        then (and between results) what to send next. Each attempt is over by
        ``attempt_bound_s(sub.timeout_s)`` from its start."""
        loop = thread_loop()
        pending = iter(jobs)
        running: set[asyncio.Task[tuple[K, AttemptResult]]] = set()
        try:
            while True:
                while len(running) < width and (job := next(pending, None)) is not None:
                    running.add(loop.create_task(self._one(sub, *job)))
                if not running:
                    return
                done, running = loop.run_until_complete(
                    asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                )
                for task in done:
                    yield task.result()
        finally:
            for task in running:  # the caller stopped early: nothing is left in flight
                task.cancel()
            if running:
                loop.run_until_complete(asyncio.wait(running))

    async def _one(
        self, sub: Subscriber, key: K, webhook_id: str, body: bytes
    ) -> tuple[K, AttemptResult]:
        started = time.perf_counter()
        deadline = time.monotonic() + sub.timeout_s
        route = self._routes[sub.id]
        try:
            headers = route.signer.headers(webhook_id, int(self._clock()), body)
            reply = await post(route.target, headers, body, deadline, self._body_limit)
        except Exception as exc:  # translated, recorded, decided on by the caller
            return key, AttemptResult(
                status=None,
                duration_ms=(time.perf_counter() - started) * 1000,
                error=translate(exc),
            )
        return key, AttemptResult(
            status=reply.status,
            duration_ms=(time.perf_counter() - started) * 1000,
            response_excerpt=reply.excerpt.decode("utf-8", errors="replace"),
            retry_after=reply.retry_after,
        )
