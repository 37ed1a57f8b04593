"""Who may publish through the API: one named bearer token per producer.

``WEBHOOKS_API_TOKENS`` is ``name:token[,name:token...]``. The name is what logs and metrics show;
a token is compared in constant time against every configured one and never printed or logged.
Without tokens the API needs none, and listens on loopback only (as the console does).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from pydantic import SecretStr

from reseller_webhooks.producers.errors import ConfigError

#: What a producer's name may be (it is a metrics label and shows in logs).
PRODUCER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_TOKEN = 24
#: The producer of a request to an API without tokens (loopback only).
LOCAL_PRODUCER = "local"
VARIABLE = "WEBHOOKS_API_TOKENS"


@dataclass(frozen=True)
class Producers:
    """The configured producers, as ``(name, token bytes)`` pairs."""

    tokens: tuple[tuple[str, bytes], ...] = ()

    @property
    def required(self) -> bool:
        return bool(self.tokens)

    def identify(self, authorization: str | None) -> str | None:
        """The producer's name for an ``Authorization`` header, else None. Every token is
        compared, whichever matches, so the time taken tells nothing."""
        if not self.tokens:
            return LOCAL_PRODUCER
        scheme, _, value = (authorization or "").partition(" ")
        given = value.strip().encode()
        found = None
        for name, token in self.tokens:
            if hmac.compare_digest(given, token) and found is None:
                found = name
        return found if scheme.lower() == "bearer" else None


def parse_tokens(value: SecretStr | None) -> Producers:
    """``name:token[,name:token...]``; ``ConfigError`` names the entry by position and the rule,
    never a token."""
    if value is None:
        return Producers()
    pairs: list[tuple[str, bytes]] = []
    for number, entry in enumerate(value.get_secret_value().split(","), start=1):
        name, colon, token = entry.strip().partition(":")
        where = f"{VARIABLE}: entry {number}"
        if not colon or not PRODUCER_NAME.match(name):
            raise ConfigError(
                f"{where}: must be name:token, the name of 1 to 64 letters, digits, '_', '.', '-'"
            )
        if len(token) < MIN_TOKEN or not token.isascii() or not token.isprintable() or " " in token:
            raise ConfigError(
                f"{where} ({name}): the token must be at least {MIN_TOKEN} printable ASCII"
                " characters without spaces"
            )
        if any(name == seen for seen, _ in pairs):
            raise ConfigError(f"{where}: the name {name} is given twice")
        if any(hmac.compare_digest(token.encode(), seen) for _, seen in pairs):
            raise ConfigError(f"{where} ({name}): the same token as another producer")
        pairs.append((name, token.encode()))
    return Producers(tuple(pairs))
