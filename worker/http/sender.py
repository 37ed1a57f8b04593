"""One HTTP attempt to one subscriber: sign, POST the exact bytes, read a bounded response.

Lower-layer exceptions are translated into the error tree here and only here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpcore
import httpx

from reseller_webhooks.worker.config.subscribers import Subscriber, SubscribersConfig
from reseller_webhooks.worker.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from reseller_webhooks.worker.http.failure_text import RETRYABLE_CORE, failure_text
from reseller_webhooks.worker.http.signing import Signer
from reseller_webhooks.worker.http.transport import (
    GuardedTransport,
    Resolve,
    system_resolve,
)

USER_AGENT = "reseller-webhooks/0.1"
#: The event's number among its user's events: receivers apply a state only when it is higher
#: than the last one they applied for that user.
SEQUENCE_HEADER = "webhook-sequence"

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
        return self.error.reason if self.error else None


def translate(exc: Exception) -> DeliveryError:
    """The one place where transport exceptions become :class:`DeliveryError`."""
    if isinstance(exc, DeliveryError):
        return exc
    text = failure_text(exc)
    if isinstance(exc, RETRYABLE_CORE) or (
        isinstance(exc, httpx.TransportError)
        and not isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError)
    ):
        return RetryableDeliveryError(text)  # timeouts included
    return PermanentDeliveryError(text)


@dataclass(frozen=True, slots=True)
class _Route:
    """Everything about one subscriber that does not change between attempts, built once."""

    url: httpcore.URL
    #: ``host`` first, then the subscriber's headers and ours, encoded as httpx encodes them.
    host: tuple[bytes, bytes]
    headers: tuple[tuple[bytes, bytes], ...]
    timeout: dict[str, float | None]
    signer: Signer

    @classmethod
    def of(cls, sub: Subscriber) -> _Route:
        url = httpx.URL(str(sub.url))
        raw = httpx.Request("POST", url, headers=_fixed_headers(sub, url)).headers.raw
        host, *rest = (h for h in raw if h[0].lower() != b"content-length")
        return cls(
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            host=host,
            headers=tuple(rest),
            timeout=httpx.Timeout(sub.timeout_s).as_dict(),
            signer=Signer(sub.signing_keys, sub.signing),
        )


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


class Sender:
    """One pooled, guarded transport for every subscriber, and one signer per subscriber.
    Thread-safe.

    The pool is keyed by origin. Connections in use are bounded by the worker's threads (no
    request ever waits for a connection); idle ones by ``keep_alive`` in all, whatever the
    number of subscribers (a surplus idle connection is closed), each for at most the pool's
    ``keepalive_expiry``. An idle subscriber holds no connection and no TLS context
    (docs/sizing.md).

    Requests go to the transport's httpcore pool directly, their headers encoded once per
    subscriber: ``httpx.Client`` would merge headers, cookies, auth and redirect settings on
    every call, none of which a webhook uses, and costs about as much CPU again as the HTTP
    exchange itself; the ``httpx.Request`` and ``Response`` around each exchange cost another
    sixth of a delivery's CPU (docs/benchmarks.md).
    """

    def __init__(
        self,
        config: SubscribersConfig,
        *,
        body_limit: int = 4096,
        keep_alive: int = 16,
        clock: Callable[[], float] = time.time,
        resolve: Resolve = system_resolve,
    ) -> None:
        self._body_limit = body_limit
        self._clock = clock
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=keep_alive)
        self.transport = GuardedTransport(
            allow_private=config.allow_private_networks, limits=limits, resolve=resolve
        )
        self._routes = {sub.id: _Route.of(sub) for sub in config.subscribers}

    def close(self) -> None:
        self.transport.close()

    def attempt(
        self,
        sub: Subscriber,
        webhook_id: str,
        body: bytes,
        *,
        sequence: int = 0,
        traceparent: str = "",
    ) -> AttemptResult:
        """Make one attempt, over by ``attempt_bound_s(sub.timeout_s)``; never raises for delivery
        problems (they are in the result). A ``sequence`` (the event's number among its user's
        events; 0: none) is sent as ``webhook-sequence``, a ``traceparent`` as it is."""
        started = time.perf_counter()
        deadline = time.monotonic() + sub.timeout_s
        try:
            status, excerpt, retry_after = self._post(
                sub, webhook_id, body, deadline, sequence, traceparent
            )
        except Exception as exc:  # translated, recorded, decided on by the caller
            return AttemptResult(
                status=None,
                duration_ms=(time.perf_counter() - started) * 1000,
                error=translate(exc),
            )
        return AttemptResult(
            status=status,
            duration_ms=(time.perf_counter() - started) * 1000,
            response_excerpt=excerpt,
            retry_after=retry_after,
        )

    # No retry in here, not even for a kept-alive connection the subscriber closed while idle:
    # the pool already drops idle connections whose peer has hung up (is_readable), what is left
    # is a race of a round trip, and a second try would have to share this attempt's deadline
    # and could reach a subscriber that did get the first. The schedule retries instead.
    def _post(
        self,
        sub: Subscriber,
        webhook_id: str,
        body: bytes,
        deadline: float,
        sequence: int,
        traceparent: str,
    ) -> tuple[int, str, str | None]:
        route = self._routes[sub.id]
        signed = route.signer.headers(webhook_id, int(self._clock()), body)
        headers = [route.host, *route.headers]
        headers += [(k.encode(), v.encode("ascii")) for k, v in signed.items()]
        if sequence:
            headers.append((SEQUENCE_HEADER.encode(), b"%d" % sequence))
        if traceparent:
            headers.append((b"traceparent", traceparent.encode("ascii")))
        headers.append((b"Content-Length", b"%d" % len(body)))
        request = httpcore.Request(
            b"POST",
            route.url,
            headers=headers,
            content=body,
            extensions={"timeout": dict(route.timeout)},
        )
        status, received, response_headers = self.transport.exchange(
            request, deadline, self._body_limit
        )
        excerpt = received.decode("utf-8", errors="replace")
        retry_after = next(
            (v.decode("latin-1") for k, v in response_headers if k.lower() == b"retry-after"), None
        )
        return status, excerpt, retry_after
