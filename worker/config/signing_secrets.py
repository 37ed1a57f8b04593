"""Signing secrets: the Standard Webhooks ``whsec_`` format, read from the subscribers file or
from the environment variable it names. Messages name the field and the variable, never a
value."""

from __future__ import annotations

import base64
import binascii
import os
import re

from pydantic import SecretStr

#: What an environment variable name may be (``secret_env``, ``previous_secret_env``).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def decode_secret(value: str) -> bytes:
    """The HMAC key a ``whsec_`` secret encodes (24 to 64 bytes); ``ValueError`` otherwise."""
    if not value.startswith("whsec_"):
        raise ValueError("must start with 'whsec_' (Standard Webhooks secret format)")
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after 'whsec_' must be valid base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"must encode 24 to 64 random bytes, got {len(key)}")
    return key


def resolve_secret(
    value: SecretStr | None,
    env: str | None,
    field: str,
    *,
    required: bool,
    resolve: bool = True,
) -> bytes | None:
    """The key of ``field``: from ``value``, or from the variable ``env`` names (left unread,
    ``None``, when ``resolve`` is false); ``None`` when neither is set and none is ``required``."""
    if value is not None and env is not None:
        raise ValueError(f"set either {field} or {field}_env, not both")
    if env is not None and not resolve:
        return None
    if env is not None:
        raw = os.environ.get(env)
        if not raw:
            raise ValueError(f"{field}_env: environment variable {env} is not set")
        try:
            return decode_secret(raw)
        except ValueError as exc:
            raise ValueError(f"{field}_env: the value of {env} {exc}") from None
    if value is not None:
        try:
            return decode_secret(value.get_secret_value())
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None
    if required:
        raise ValueError("one of secret or secret_env is required")
    return None
