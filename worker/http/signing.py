"""Standard Webhooks signatures, computed by the spec's reference library."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


class Signer:
    """Signs with every key of a subscriber (current first, then one in rotation)."""

    __slots__ = ("_webhooks",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._webhooks = tuple(Webhook(k) for k in keys)

    def __repr__(self) -> str:
        return f"Signer(<{len(self._webhooks)} key(s)>)"

    def headers(self, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """``webhook-id``, ``webhook-timestamp`` and a space-separated ``webhook-signature``."""
        when = datetime.fromtimestamp(timestamp, UTC)
        text = body.decode()
        signature = " ".join(w.sign(webhook_id, when, text) for w in self._webhooks)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
