"""What an attempt's failure is called in the attempt log, dead letters, pages and logs: a
phrase a reader understands, never the HTTP client's class names. A table, first match wins
(subclasses before their bases)."""

from __future__ import annotations

import httpcore
import httpx

#: (exception types, what happened), most specific first: httpx's, and httpcore's that the
#: delivery transport raises as they are.
PHRASES: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((httpx.ConnectTimeout, httpcore.ConnectTimeout), "timed out connecting"),
    ((httpx.ReadTimeout, httpcore.ReadTimeout), "timed out waiting for the response"),
    ((httpx.WriteTimeout, httpcore.WriteTimeout), "timed out sending the request"),
    ((httpx.PoolTimeout, httpcore.PoolTimeout), "timed out waiting for a free connection"),
    ((httpx.TimeoutException, httpcore.TimeoutException), "timed out"),
    ((httpx.ConnectError, httpcore.ConnectError), "could not connect"),
    ((httpx.ReadError, httpcore.ReadError), "the connection broke while reading the response"),
    ((httpx.WriteError, httpcore.WriteError), "the connection broke while sending the request"),
    (
        (httpx.RemoteProtocolError, httpcore.RemoteProtocolError),
        "the subscriber broke off or garbled the HTTP exchange",
    ),
    (
        (httpx.UnsupportedProtocol, httpcore.UnsupportedProtocol),
        "the URL's scheme is not http or https",
    ),
    (
        (httpx.LocalProtocolError, httpcore.LocalProtocolError),
        "the request could not be sent as HTTP",
    ),
    (
        (httpx.TransportError, httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError),
        "the HTTP exchange failed",
    ),
)

#: httpcore's failures that a later attempt may get past (httpx's: its ``TransportError``).
RETRYABLE_CORE = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.RemoteProtocolError,
    httpcore.ProxyError,
)


def failure_text(exc: BaseException) -> str:
    """``could not connect ([Errno 111] Connection refused)``: the phrase for ``exc``'s kind,
    then what it said when that adds anything. An exception outside the table (a fault of
    ours, not the subscriber's) keeps its type name, as it is what a fix starts from."""
    detail = str(exc).strip()
    phrase = next((text for kind, text in PHRASES if isinstance(exc, kind)), None)
    if phrase is None:
        return (
            f"unexpected error ({type(exc).__name__}: {detail})"
            if detail
            else (f"unexpected error ({type(exc).__name__})")
        )
    if detail.lower() in {"", "timed out", phrase}:
        return phrase
    return f"{phrase} ({detail})"
