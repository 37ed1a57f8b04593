"""Signing secrets in the Standard Webhooks formats: ``whsec_`` (an HMAC key, ``signing: hmac``)
and ``whsk_`` (an ed25519 secret key, ``signing: ed25519``; its public key is ``whpk_``), read
from the subscribers file or from the environment variable it names. Messages name the field
and the variable, never a value."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr

#: How a subscriber's requests are signed: HMAC-SHA256 (``v1``) or ed25519 (``v1a``).
Scheme = Literal["hmac", "ed25519"]

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


def _b64(value: str, prefix: str) -> bytes:
    try:
        return base64.b64decode(value.removeprefix(prefix), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after '{prefix}' must be valid base64") from None


def public_key(seed: bytes) -> bytes:
    """The 32-byte ed25519 public key of a 32-byte secret seed."""
    return (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def decode_secret_key(value: str) -> bytes:
    """The 32-byte ed25519 seed a ``whsk_`` secret key encodes; ``ValueError`` otherwise.

    Accepted: base64 of the 32-byte seed, or of the 64 bytes most ed25519 libraries call the
    secret key (the seed followed by its public key, which must then match)."""
    if not value.startswith("whsk_"):
        hint = " (a whsec_ secret is for signing: hmac)" if value.startswith("whsec_") else ""
        raise ValueError(f"must start with 'whsk_' (Standard Webhooks ed25519 secret key){hint}")
    key = _b64(value, "whsk_")
    if len(key) not in (32, 64):
        raise ValueError(f"must encode a 32-byte seed or a 64-byte secret key, got {len(key)}")
    if len(key) == 64 and public_key(key[:32]) != key[32:]:
        raise ValueError("is not an ed25519 secret key: its second half is not its public key")
    return key[:32]


def new_key_pair() -> tuple[str, str]:
    """A fresh ed25519 pair: the ``whsk_`` secret key (64 bytes: seed, then public key) and the
    ``whpk_`` public key a receiver verifies with."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    public = public_key(seed)
    return (
        "whsk_" + base64.b64encode(seed + public).decode(),
        "whpk_" + base64.b64encode(public).decode(),
    )


#: Each scheme's secret format.
DECODERS: dict[Scheme, Callable[[str], bytes]] = {
    "hmac": decode_secret,
    "ed25519": decode_secret_key,
}


def resolve_secret(
    value: SecretStr | None,
    env: str | None,
    field: str,
    *,
    required: bool,
    resolve: bool = True,
    scheme: Scheme = "hmac",
) -> bytes | None:
    """The key of ``field`` for ``scheme``: from ``value``, or from the variable ``env`` names
    (left unread, ``None``, when ``resolve`` is false); ``None`` when neither is set and none is
    ``required``."""
    decode = DECODERS[scheme]
    if value is not None and env is not None:
        raise ValueError(f"set either {field} or {field}_env, not both")
    if env is not None and not resolve:
        return None
    if env is not None:
        raw = os.environ.get(env)
        if not raw:
            raise ValueError(f"{field}_env: environment variable {env} is not set")
        try:
            return decode(raw)
        except ValueError as exc:
            raise ValueError(f"{field}_env: the value of {env} {exc}") from None
    if value is not None:
        try:
            return decode(value.get_secret_value())
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from None
    if required:
        raise ValueError("one of secret or secret_env is required")
    return None
