"""Settings shared by producers and workers; the only place that reads the environment.

The worker extends these in ``worker.settings``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    visibility_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "How long a queued trigger may stay unconsumed before the scheduler re-sends it, and"
            " Celery's Redis visibility timeout: the bound on recovery after a worker dies."
        ),
    )

    @field_validator("sentinel_master", "sentinel_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``WEBHOOKS_SENTINEL_MASTER=`` (as compose passes an unset variable) means not set."""
        return None if value == "" else value
