"""What an attempt's failure is called: a readable phrase, never the HTTP client's class."""

from __future__ import annotations

import httpcore
import httpx
import pytest

from reseller_webhooks.worker.errors import (
    PermanentDeliveryError,
    RefusedAddressError,
    RetryableDeliveryError,
)
from reseller_webhooks.worker.http.failure_text import failure_text
from reseller_webhooks.worker.http.sender import translate


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (
            httpx.ConnectError("[Errno 111] Connection refused"),
            "could not connect ([Errno 111] Connection refused)",
        ),
        (httpx.ConnectTimeout("timed out"), "timed out connecting"),
        (httpx.ReadTimeout("timed out"), "timed out waiting for the response"),
        (httpx.WriteTimeout(""), "timed out sending the request"),
        (httpx.PoolTimeout("x"), "timed out waiting for a free connection (x)"),
        (
            httpx.ReadError("[Errno 104] Connection reset by peer"),
            "the connection broke while reading the response"
            " ([Errno 104] Connection reset by peer)",
        ),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "the subscriber broke off or garbled the HTTP exchange"
            " (Server disconnected without sending a response.)",
        ),
        (
            httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."),
            "the URL's scheme is not http or https (Request URL has an unsupported protocol 'ftp://'.)",
        ),
        (ValueError("boom"), "unexpected error (ValueError: boom)"),
        # httpcore's own, as the delivery transport raises them
        (httpcore.ConnectTimeout("timed out"), "timed out connecting"),
        (httpcore.ReadTimeout("timed out"), "timed out waiting for the response"),
        (httpcore.PoolTimeout("x"), "timed out waiting for a free connection (x)"),
        (
            httpcore.ConnectError("[Errno 111] Connection refused"),
            "could not connect ([Errno 111] Connection refused)",
        ),
        (httpcore.WriteError("pipe"), "the connection broke while sending the request (pipe)"),
        (
            httpcore.RemoteProtocolError("Server disconnected without sending a response."),
            "the subscriber broke off or garbled the HTTP exchange"
            " (Server disconnected without sending a response.)",
        ),
        (httpcore.LocalProtocolError("bad"), "the request could not be sent as HTTP (bad)"),
        (httpcore.ProxyError("p"), "the HTTP exchange failed (p)"),
    ],
)
def test_failure_text(exc: Exception, text: str) -> None:
    assert failure_text(exc) == text


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        (
            httpx.ConnectError("[Errno 111] Connection refused"),
            RetryableDeliveryError,
            "could not connect ([Errno 111] Connection refused)",
        ),
        (
            httpx.ReadTimeout("timed out"),
            RetryableDeliveryError,
            "timed out waiting for the response",
        ),
        (
            httpx.UnsupportedProtocol("no"),
            PermanentDeliveryError,
            "the URL's scheme is not http or https (no)",
        ),
        (
            httpcore.ReadError("reset"),
            RetryableDeliveryError,
            "the connection broke while reading the response (reset)",
        ),
        (
            httpcore.ReadTimeout("timed out"),
            RetryableDeliveryError,
            "timed out waiting for the response",
        ),
        (
            httpcore.RemoteProtocolError("x"),
            RetryableDeliveryError,
            "the subscriber broke off or garbled the HTTP exchange (x)",
        ),
        (
            httpcore.UnsupportedProtocol("no"),
            PermanentDeliveryError,
            "the URL's scheme is not http or https (no)",
        ),
        (
            httpcore.LocalProtocolError("bad"),
            PermanentDeliveryError,
            "the request could not be sent as HTTP (bad)",
        ),
        (
            RefusedAddressError("x resolves to 10.0.0.1"),
            RefusedAddressError,
            "refused address: x resolves to 10.0.0.1",
        ),
    ],
)
def test_the_reason_an_attempt_records_names_no_class(
    exc: Exception, kind: type[Exception], reason: str
) -> None:
    error = translate(exc)
    assert type(error) is kind
    assert error.reason == reason
