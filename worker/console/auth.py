"""Who may use the console: a login (user and password), a token, or nobody but this machine.

With neither a password nor a token set, the console serves without a login, and only on a
loopback address (``reseller-webhooks dev``); anywhere else it refuses to start. Credentials are
compared in constant time and never printed or logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass

from pydantic import SecretStr

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.worker.config.settings import WorkerSettings

#: What an operator's name may be (it is logged with every action).
OPERATOR_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 12
MIN_TOKEN = 24
MIN_DISTINCT = 5
#: The operator of a console that needs no login (loopback only).
LOCAL_OPERATOR = "local"
#: The operator of a request authenticated by ``Authorization: Bearer``.
TOKEN_OPERATOR = "token"  # noqa: S105  (a name, not a credential)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) listens on this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def weakness(secret: str, minimum: int) -> str | None:
    """What is wrong with a console password or token, or None: too short, only whitespace,
    a short piece repeated (``aaaaaaaaaaaa``, ``abcabcabcabc``) or too few different characters."""
    if len(secret) < minimum:
        return f"at least {minimum} characters"
    if not secret.strip():
        return "not only whitespace"
    for size in range(1, 5):
        if len(secret) % size == 0 and secret == secret[:size] * (len(secret) // size):
            return "not one short piece repeated"
    if len(set(secret)) < MIN_DISTINCT:
        return f"at least {MIN_DISTINCT} different characters"
    return None


def _same(given: str, expected: SecretStr) -> bool:
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


@dataclass(frozen=True)
class Credentials:
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None

    @property
    def required(self) -> bool:
        """Whether a login is needed (else the console is open, on loopback only)."""
        return self.password is not None or self.token is not None

    def login(self, user: str, password: str) -> str | None:
        """The operator's name for a good login form, else None: the configured user and
        password, or any operator name with the token as the password."""
        if not OPERATOR_NAME.match(user):
            return None
        # Every comparison is made, whatever the first ones said.
        user_ok = self.user is not None and _same(user, SecretStr(self.user))
        password_ok = self.password is not None and _same(password, self.password)
        token_ok = self.token is not None and _same(password, self.token)
        if user_ok and password_ok:
            return user
        if token_ok:
            return f"{user} (token)"
        return None

    def bearer(self, header: str) -> bool:
        """Whether an ``Authorization`` header carries the token."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or self.token is None:
            return False
        return _same(value.strip(), self.token)


def credentials(settings: WorkerSettings) -> Credentials:
    """The console's credentials from the settings; ``ConfigError`` names what is incomplete
    or too weak (never a value)."""
    user, password, token = settings.console_user, settings.console_password, settings.console_token
    if (user is None) != (password is None):
        raise ConfigError(
            "WEBHOOKS_CONSOLE_USER and WEBHOOKS_CONSOLE_PASSWORD: set both or neither"
        )
    for name, secret, minimum in (
        ("WEBHOOKS_CONSOLE_PASSWORD", password, MIN_PASSWORD),
        ("WEBHOOKS_CONSOLE_TOKEN", token, MIN_TOKEN),
    ):
        problem = weakness(secret.get_secret_value(), minimum) if secret is not None else None
        if problem:
            raise ConfigError(f"{name}: {problem}")
    return Credentials(user, password, token)


def refusal(host: str, creds: Credentials) -> str | None:
    """Why the console must not start on ``host`` with these credentials, or None."""
    if creds.required or is_loopback(host):
        return None
    return (
        f"the console needs a login to listen on {host} (not a loopback address): set"
        " WEBHOOKS_CONSOLE_USER and WEBHOOKS_CONSOLE_PASSWORD, or WEBHOOKS_CONSOLE_TOKEN"
    )
