"""Subscriber URLs as they may be shown: in logs, attempt records, dead letters, pages and the
command line."""

from __future__ import annotations

import httpx

#: What is shown for a string that is not an absolute http(s) URL.
UNREADABLE_URL = "<not a URL>"


def redact_url(url: str) -> str:
    """``url`` with its scheme, host, port and path only: credentials, the query string and the
    fragment are left out (any of them may hold a token). The URL is read as the HTTP client
    reads it, so what is shown is where requests go: a host name lower-cased and IDNA-encoded, a
    default port dropped, the path percent-encoded, ``/`` when it has none."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return UNREADABLE_URL
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        return UNREADABLE_URL
    # raw_path is the path and the query as sent ("/" for no path); a path holds no raw "?".
    path = parsed.raw_path.partition(b"?")[0]
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}{path.decode('ascii')}"
