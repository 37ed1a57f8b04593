"""Settings shared by producers and workers; the only place that reads the environment.

The worker extends these in ``worker.config.settings``. A bad value raises :class:`ConfigError`
naming the variable and the rule, never the value; the repr hides the Redis password.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.connection import parse_url

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.events import DEFAULT_MAX_BODY_BYTES

#: Schemes both the Redis client and the Celery transport understand (sentinel: kombu only).
REDIS_SCHEMES = ("redis", "rediss", "sentinel")

_USERINFO = re.compile(r"://([^/?#]*)@")


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match.group(1).rpartition(":")
    return f"://{user}:***@" if colon else "://***@"


def redact_redis_url(url: str) -> str:
    """``url`` with its password, query and fragment masked (each part of a ``;``-joined list of
    sentinel URLs too), for reprs and messages. A string that is not a URL is masked whole."""
    parts: list[str] = []
    for part in url.split(";"):
        if "://" not in part:
            parts.append("***" if part else part)
            continue
        part = _USERINFO.sub(_mask_userinfo, part, count=1)
        for mark in "?#":
            head, sep, _tail = part.partition(mark)
            part = head + sep + ("***" if sep else "")
        parts.append(part)
    return ";".join(parts)


def describe_settings_error(exc: ValidationError) -> str:
    """One ``"<VARIABLE>: <rule>"`` per problem; never the value (a URL may hold a password)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        name = str(error["loc"][0]) if error["loc"] else "?"
        variable = name if name.isupper() else f"WEBHOOKS_{name.upper()}"
        problems.append(f"{variable}: " + str(error["msg"]).removeprefix("Value error, "))
    return "; ".join(problems)


class ProducerSettings(BaseSettings):
    """What a producer needs: where Redis is and which keys and queues are ours."""

    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_", extra="ignore", frozen=True)

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "WEBHOOKS_REDIS_URL"),
        description="Broker and state store: redis://, rediss:// (TLS) or sentinel://h1:26379;...",
    )
    sentinel_master: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="With a sentinel:// URL: the service name the Sentinels monitor.",
    )
    sentinel_password: SecretStr | None = Field(
        default=None, description="Password of the Sentinels themselves (not of the master)."
    )
    redis_ca_file: Path | None = Field(
        default=None, description="rediss://: CA certificate(s) that sign the server's certificate."
    )
    redis_cert_file: Path | None = Field(
        default=None, description="rediss://: client certificate, when Redis asks for one."
    )
    redis_key_file: Path | None = Field(
        default=None, description="rediss://: the client certificate's private key."
    )
    publish_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Replicas that must hold an event before publish returns its id"
        " (default: 1 with a sentinel:// URL, else 0).",
    )
    publish_replicas_timeout_ms: int = Field(
        default=1000, gt=0, description="How long publish waits for those replicas."
    )
    key_prefix: str = Field(
        default="rw",
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every Redis key and queue name of this deployment.",
    )
    event_retention_s: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="How long a published event body is kept in Redis (covers the 3-day schedule).",
    )
    idempotency_retention_s: int = Field(
        default=24 * 3600,
        gt=0,
        description="How long an idempotency key given at publish maps to its event id.",
    )
    visibility_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How long a queued trigger may stay unconsumed before the scheduler re-sends it, and"
            " Celery's Redis visibility timeout: the bound on recovery after a worker dies."
        ),
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        gt=0,
        description="Largest event body accepted at publish time, in bytes (UTF-8 JSON).",
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe_settings_error(exc)) from None

    @field_validator("redis_url")
    @classmethod
    def _valid_redis_url(cls, value: str) -> str:
        for part in value.split(";"):
            scheme, sep, _ = part.partition("://")
            if not sep or scheme.lower() not in REDIS_SCHEMES:
                raise ValueError("must be a URL starting with redis://, rediss:// or sentinel://")
            try:  # the client's own messages may quote the URL: say which rule instead
                if scheme.lower() == "sentinel":
                    _ = urlsplit(part).port
                else:
                    parse_url(part)  # type: ignore[no-untyped-call]
            except ValueError:
                raise ValueError(
                    "is not a valid Redis URL (check the host, the port, the database number"
                    " and any ?option=value)"
                ) from None
        return value

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_redis_url(value) if name == "redis_url" else value

    @field_validator("sentinel_master", "sentinel_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``WEBHOOKS_SENTINEL_MASTER=`` (as compose passes an unset variable) means not set."""
        return None if value == "" else value
