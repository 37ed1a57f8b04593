"""Worker settings (environment, prefix ``WEBHOOKS_``), on top of the shared producer settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator

from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.worker.operational_events import DEFAULT_FAILING_AFTER


class WorkerSettings(ProducerSettings):
    subscribers: Path | None = Field(
        default=None, description="Path of the subscribers YAML file (WEBHOOKS_SUBSCRIBERS)."
    )
    redis_server: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_SERVER", "WEBHOOKS_REDIS_SERVER"),
        description="redis-server binary for `dev` (default: PATH, then the bundled one).",
    )
    schedule_scale: float = Field(
        default=1.0,
        gt=0,
        description="Multiplies every retry delay; tests and demos use e.g. 0.001 to run a"
        " 24-hour schedule in under two minutes.",
    )
    embedded_scheduler: bool = Field(
        default=True, description="Run the scheduler as a thread inside each worker."
    )
    scheduler_interval_s: float = Field(
        default=0.25, gt=0, description="How often the scheduler looks for due retries."
    )
    scheduler_batch: int = Field(
        default=500, gt=0, description="Most deliveries one scheduler tick moves to the queue."
    )
    concurrency: int = Field(
        default=8,
        gt=0,
        description="Deliveries in flight per worker process (threads; each waits on the network).",
    )
    cpu_affinity: str = Field(
        default="off",
        pattern=r"^(auto|off|[0-9]+)$",
        description="Pin the worker process to one CPU core: 'off' (the default), a core"
        " number, or 'auto': a free core of the machine, only where no CPU quota applies and"
        " every core is allowed (docs/cpu-pinning.md).",
    )
    deliver_chunk: int = Field(
        default=50, gt=0, description="Most deliveries one deliver task carries."
    )
    attempt_log_size: int = Field(
        default=50, gt=0, description="Attempts kept per delivery (newest win)."
    )
    response_body_bytes: int = Field(
        default=4096, ge=0, description="How much of a response body the attempt log keeps."
    )
    record_retention_s: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="How long finished delivery records and attempt logs are kept.",
    )
    dead_letter_retention_s: int = Field(
        default=30 * 24 * 3600, gt=0, description="How long dead letters are kept."
    )
    failing_after: int = Field(
        default=DEFAULT_FAILING_AFTER,
        gt=0,
        description="Consecutive failed attempts after which a webhooks.subscriber.failing"
        " event is sent (once per incident).",
    )
    subscribers_watch_s: float = Field(
        default=1.0,
        ge=0,
        description="How often a worker checks the subscribers file for changes and reloads it"
        " (0: never).",
    )
    subscribers_settle_s: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="A changed subscribers file is read twice this far apart and taken only when"
        " both reads agree (a file still being written is left for the next look).",
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the worker's Prometheus /metrics endpoint; 0 serves none.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the /metrics endpoint listens on: loopback unless configured"
        " (a deployment whose scraper runs elsewhere sets the address it needs).",
    )
    console_user: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.@-]{1,64}$",
        description="The operator console's login name (with WEBHOOKS_CONSOLE_PASSWORD).",
    )
    console_password: SecretStr | None = Field(
        default=None, description="The operator console's password; never printed or logged."
    )
    console_token: SecretStr | None = Field(
        default=None,
        description="A token for the console: `Authorization: Bearer TOKEN` for scripts, or"
        " typed as the password on the login page under the operator's own name.",
    )
    console_read_only: bool = Field(
        default=False, description="Serve the console without any action (also --read-only)."
    )
    console_cookie_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs the console's session cookies (several console processes"
        " behind one address share it); a random one per start when unset.",
    )

    console_allowed_hosts: str = Field(
        default="",
        description="Host names the console answers to besides loopback names and IP addresses"
        " (comma-separated; the name a TLS proxy forwards): any other Host is refused.",
    )
    console_trusted_proxies: str = Field(
        default="",
        description="Addresses or networks of the proxies in front of the console (comma-"
        "separated): from them only, X-Forwarded-For and X-Forwarded-Proto are believed.",
    )
    console_login_delay_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="First lock after repeated failed logins or tokens, s; each further failure"
        " doubles it (at most 5 minutes).",
    )

    api_tokens: SecretStr | None = Field(
        default=None,
        description="The HTTP ingest API's producers: `name:token[,name:token...]`; each sends"
        " `Authorization: Bearer TOKEN`. Unset: no token needed, loopback only.",
    )
    api_body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long the ingest API waits for a request body to arrive in full.",
    )
    api_max_request_bytes: int = Field(
        default=1024 * 1024,
        gt=0,
        description="Largest request body of `POST /v1/events/batch`, in bytes; a single"
        " event's request is bounded by WEBHOOKS_MAX_BODY_BYTES.",
    )

    @field_validator(
        "console_user",
        "console_password",
        "console_token",
        "console_cookie_secret",
        "api_tokens",
        mode="before",
    )
    @classmethod
    def _empty_console_setting_is_unset(cls, value: object) -> object:
        """``WEBHOOKS_CONSOLE_TOKEN=`` (as compose passes an unset variable) means not set."""
        return None if value == "" else value


def load_settings() -> WorkerSettings:
    """Settings from the environment; a bad value raises :class:`ConfigError` naming the variable
    and the rule (never the value: a Redis URL may carry a password)."""
    return WorkerSettings()
