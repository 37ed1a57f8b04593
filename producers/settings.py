"""Settings shared by producers and workers; the only place that reads the environment.

The worker extends these in ``worker.settings``.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProducerSettings(BaseSettings):
    """What a producer needs: where Redis is and which keys and queues are ours."""

    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_", extra="ignore", frozen=True)

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "WEBHOOKS_REDIS_URL"),
        description="Broker and state store.",
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
