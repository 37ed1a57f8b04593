"""A subscriber's own request headers: what the subscribers file may set, checked when it is
loaded so that no delivery fails on a header (and no value is ever quoted in a message)."""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Headers the worker sets on every request; a subscriber may not set them.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "webhook-sequence",
        "traceparent",
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
        "connection",
        "user-agent",
    }
)
#: RFC 9110 ``token``: what a field name may be.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Visible ASCII, spaces and tabs inside, none at either end (what the HTTP client will send).
HEADER_VALUE = re.compile(r"([\x21-\x7e]([\x20\x09]*[\x21-\x7e])*)?")


def check_headers(value: Mapping[str, str]) -> dict[str, str]:
    """Refuse what would make every delivery fail or send a header twice: names that are not
    RFC 9110 tokens, values with control characters, CR/LF or non-ASCII text, names the worker
    sets itself, and one name given twice in different case. Never quotes a value."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for name, text in value.items():
        if not HEADER_NAME.fullmatch(name):
            problems.append(
                f"name {name!r} is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~;"
                " no spaces)"
            )
            continue
        if name.lower() in RESERVED_HEADERS:
            problems.append(f"may not set {name}: the worker sets it itself")
        elif name.lower() in seen:
            problems.append(f"{seen[name.lower()]} and {name} are the same header")
        seen[name.lower()] = name
        if not HEADER_VALUE.fullmatch(text):
            problems.append(
                f"the value of {name} must be visible ASCII characters and inner spaces"
                " (no CR, LF or other control characters, nothing non-ASCII, no spaces at"
                " either end)"
            )
    if problems:
        raise ValueError("; ".join(problems))
    return dict(value)
