"""Standard Webhooks signatures: ``v1`` (HMAC-SHA256, computed by the spec's reference library)
and ``v1a`` (ed25519), both over ``{webhook-id}.{webhook-timestamp}.{body}``."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks.webhooks import Webhook

from reseller_webhooks.worker.config.signing_secrets import Scheme


class _Ed25519:
    """One ed25519 key: ``v1a,<base64 of the 64-byte signature>``."""

    __slots__ = ("_key",)

    def __init__(self, seed: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)

    def sign(self, webhook_id: str, when: datetime, text: str) -> str:
        signed = f"{webhook_id}.{int(when.timestamp())}.{text}".encode()
        return "v1a," + base64.b64encode(self._key.sign(signed)).decode()


class Signer:
    """Signs with every key of a subscriber (current first, then one in rotation)."""

    __slots__ = ("_signers",)

    def __init__(self, keys: Sequence[bytes], scheme: Scheme = "hmac") -> None:
        self._signers: tuple[Webhook | _Ed25519, ...] = tuple(
            _Ed25519(k) if scheme == "ed25519" else Webhook(k) for k in keys
        )

    def __repr__(self) -> str:
        return f"Signer(<{len(self._signers)} key(s)>)"

    def headers(self, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """``webhook-id``, ``webhook-timestamp`` and a space-separated ``webhook-signature``."""
        when = datetime.fromtimestamp(timestamp, UTC)
        text = body.decode()
        signature = " ".join(s.sign(webhook_id, when, text) for s in self._signers)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
