"""What an attempt's failure is called in the attempt log, dead letters, pages and logs: a
phrase a reader understands, never the HTTP client's class names. A table, first match wins
(subclasses before their bases)."""

from __future__ import annotations

import httpx

#: (exception type, what happened), most specific first.
PHRASES: tuple[tuple[type[BaseException], str], ...] = (
    (httpx.ConnectTimeout, "timed out connecting"),
    (httpx.ReadTimeout, "timed out waiting for the response"),
    (httpx.WriteTimeout, "timed out sending the request"),
    (httpx.PoolTimeout, "timed out waiting for a free connection"),
    (httpx.TimeoutException, "timed out"),
    (httpx.ConnectError, "could not connect"),
    (httpx.ReadError, "the connection broke while reading the response"),
    (httpx.WriteError, "the connection broke while sending the request"),
    (httpx.RemoteProtocolError, "the subscriber broke off or garbled the HTTP exchange"),
    (httpx.UnsupportedProtocol, "the URL's scheme is not http or https"),
    (httpx.LocalProtocolError, "the request could not be sent as HTTP"),
    (httpx.TransportError, "the HTTP exchange failed"),
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
