"""The subscribers file: who receives which events, how they are signed, how failures are retried.

Loaded at worker start, where any problem stops the worker with a message naming the subscriber
and the field, and again whenever the file changes (``config.reload``), where a problem keeps the
running configuration. Secrets are resolved here (from ``secret`` or the environment variable
named by ``secret_env``) and held only as HMAC keys, never printed. Operator commands that do not
sign load the file with ``resolve_secrets=False``: everything is checked but the environment
variables.
Messages never quote a secret, a header value or a line of the file.

The rules for a subscriber's own headers are in ``headers``, reading a secret in
``signing_secrets``, how a URL may be shown in ``urls``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.worker.config.headers import check_headers
from reseller_webhooks.worker.config.signing_secrets import ENV_NAME, Scheme, resolve_secret
from reseller_webhooks.worker.config.urls import redact_url
from reseller_webhooks.worker.operational_events import WORKER_EVENT_TYPES
from reseller_webhooks.worker.records.breaker import DEFAULT_BREAKER_AFTER

#: Standard Webhooks schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
STANDARD_SCHEDULE_S: tuple[float, ...] = (
    0,
    5,
    300,
    1800,
    7200,
    18000,
    36000,
    50400,
    72000,
    86400,
)
#: Validation context key: ``{RESOLVE_SECRETS: False}`` checks the file without the environment.
RESOLVE_SECRETS = "resolve_secrets"
SubscriberId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]


def _first_is_immediate(value: tuple[float, ...]) -> tuple[float, ...]:
    if value and value[0] != 0:
        raise ValueError("the first entry is the first attempt and must be 0")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """When to try again. Delays are seconds after the previous attempt; jitter is +- a fraction."""

    schedule_s: tuple[Annotated[float, Field(ge=0)], ...] = Field(
        default=STANDARD_SCHEDULE_S, min_length=1
    )
    jitter: float = Field(default=0.2, ge=0, lt=1)
    retry_after_max_s: float = Field(default=86400, gt=0)
    #: 4xx statuses (besides 408/425/429) this subscriber wants retried rather than dead-lettered.
    retry_statuses: frozenset[Annotated[int, Field(ge=400, le=499)]] = frozenset()
    #: A subscriber failing everything for this long is disabled (Svix: 5 days).
    disable_after_s: float = Field(default=5 * 24 * 3600, gt=0)

    @field_validator("schedule_s")
    @classmethod
    def _first_is_immediate(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return _first_is_immediate(value)

    @property
    def max_attempts(self) -> int:
        return len(self.schedule_s)


class RetryOverride(_Strict):
    schedule_s: tuple[Annotated[float, Field(ge=0)], ...] | None = Field(default=None, min_length=1)
    jitter: float | None = Field(default=None, ge=0, lt=1)
    retry_after_max_s: float | None = Field(default=None, gt=0)
    retry_statuses: frozenset[Annotated[int, Field(ge=400, le=499)]] | None = None
    disable_after_s: float | None = Field(default=None, gt=0)

    @field_validator("schedule_s")
    @classmethod
    def _first_is_immediate(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        return None if value is None else _first_is_immediate(value)

    def over(self, base: RetryPolicy) -> RetryPolicy:
        merged = {**base.model_dump(), **self.model_dump(exclude_none=True)}
        return RetryPolicy.model_validate(merged)


class Subscriber(_Strict):
    id: SubscriberId
    url: AnyHttpUrl
    events: tuple[str, ...] = Field(min_length=1)
    secret: SecretStr | None = None
    secret_env: str | None = None
    #: Signs with this too during a rotation window, so receivers can switch at leisure.
    previous_secret: SecretStr | None = None
    previous_secret_env: str | None = None
    #: ``hmac``: ``whsec_`` secrets, ``v1`` signatures; ``ed25519``: ``whsk_`` secret keys,
    #: ``v1a`` signatures the receiver verifies with the ``whpk_`` public key.
    signing: Scheme = "hmac"
    headers: Mapping[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=15.0, gt=0, le=120)
    enabled: bool = True
    retry: RetryOverride | None = None
    #: Attempts in flight to this subscriber at once, across every worker (1 while it fails).
    max_in_flight: int = Field(default=4, ge=1, le=64)
    #: ``per_user``: a user's changes arrive in publish order, one at a time; ``none``: any order.
    ordering: Literal["per_user", "none"] = "per_user"
    #: While a user's delivery waits, a newer update supersedes the older undelivered ones.
    coalesce: bool = False
    #: Send the attempt span's W3C ``traceparent`` header (only while tracing is on).
    send_traceparent: bool = False
    #: Attempts per second to this subscriber at most, across every worker (a token bucket in
    #: Redis); none: unlimited until the receiver answers 429 (``docs/endpoint-health.md``).
    rate_limit_per_s: float | None = Field(default=None, gt=0, le=100_000)
    #: Attempts the bucket lets through at once after a quiet spell (default: the rate, >= 1).
    rate_burst: int | None = Field(default=None, ge=1, le=100_000)
    #: Failed attempts in a row that open the circuit breaker (docs/endpoint-health.md).
    breaker_after: int = Field(default=DEFAULT_BREAKER_AFTER, ge=1)

    _keys: tuple[bytes, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _coalescing_needs_order(self) -> Self:
        if self.coalesce and self.ordering != "per_user":
            raise ValueError("coalesce: true needs ordering: per_user (updates coalesce per user)")
        return self

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> Self:
        if self.rate_burst is not None and self.rate_limit_per_s is None:
            raise ValueError("rate_burst: needs rate_limit_per_s (the burst of which rate)")
        return self

    @field_validator("events")
    @classmethod
    def _patterns_match_something(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if not any(fnmatch.fnmatchcase(t, pattern) for t in WORKER_EVENT_TYPES):
                raise ValueError(
                    f"pattern {pattern!r} matches no event type ({', '.join(WORKER_EVENT_TYPES)})"
                )
        return value

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        return check_headers(value)

    @field_validator("secret_env", "previous_secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and value.startswith(("whsec_", "whsk_")):
            raise ValueError(
                "must be the name of an environment variable, not the secret itself"
                " (move the secret into that variable)"
            )
        if value is None or ENV_NAME.fullmatch(value):
            return value
        raise ValueError(
            "must be the name of an environment variable (letters, digits and _,"
            " not starting with a digit)"
        )

    @model_validator(mode="after")
    def _resolve_secrets(self, info: ValidationInfo) -> Self:
        if (self.url.username or self.url.password) and any(
            h.lower() == "authorization" for h in self.headers
        ):
            raise ValueError(
                "headers: Authorization is also set by the credentials in the url;"
                " keep one of them (two Authorization headers would be sent)"
            )
        resolve = bool((info.context or {}).get(RESOLVE_SECRETS, True))
        current = resolve_secret(
            self.secret,
            self.secret_env,
            "secret",
            required=True,
            resolve=resolve,
            scheme=self.signing,
        )
        previous = resolve_secret(
            self.previous_secret,
            self.previous_secret_env,
            "previous_secret",
            required=False,
            resolve=resolve,
            scheme=self.signing,
        )
        self._keys = tuple(k for k in (current, previous) if k is not None)
        return self

    @property
    def signing_keys(self) -> tuple[bytes, ...]:
        """Keys for :attr:`signing` (HMAC keys or ed25519 seeds), current first (empty when
        loaded without resolving secrets). Never logged:
        this is the only accessor."""
        return self._keys

    def matches(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, p) for p in self.events)

    @cached_property
    def shown_url(self) -> str:
        """The URL as logs, records and pages show it (``urls.redact_url``), worked out once."""
        return redact_url(str(self.url))

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name in {"secret", "previous_secret"}:
                continue
            if name == "url":  # credentials and query strings may hold tokens
                yield name, redact_url(str(value))
            elif name == "headers":  # values may hold tokens
                yield name, dict.fromkeys(value, "***")
            else:
                yield name, value


class SubscribersConfig(_Strict):
    allow_private_networks: bool = False
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    #: Required: a file cut short before this key must not read as "no subscribers".
    subscribers: tuple[Subscriber, ...]

    @field_validator("subscribers")
    @classmethod
    def _unique_ids(cls, value: tuple[Subscriber, ...]) -> tuple[Subscriber, ...]:
        seen: set[str] = set()
        for sub in value:
            if sub.id in seen:
                raise ValueError(f"duplicate subscriber id {sub.id!r}")
            seen.add(sub.id)
        return value

    @cached_property
    def by_id(self) -> dict[str, Subscriber]:
        return {s.id: s for s in self.subscribers}

    @cached_property
    def _routes(self) -> dict[str, tuple[Subscriber, ...]]:
        return {
            t: tuple(s for s in self.subscribers if s.enabled and s.matches(t))
            for t in WORKER_EVENT_TYPES
        }

    def matching(self, event_type: str) -> tuple[Subscriber, ...]:
        """Enabled subscribers (by config) whose patterns match ``event_type``."""
        return self._routes.get(event_type, ())

    @cached_property
    def _policies(self) -> dict[str, RetryPolicy]:
        return {s.id: s.retry.over(self.retry) if s.retry else self.retry for s in self.subscribers}

    def policy(self, subscriber: Subscriber) -> RetryPolicy:
        """The subscriber's retry policy: its overrides merged over the global one, once."""
        return self._policies[subscriber.id]


def _describe(error: Mapping[str, Any], raw: Any) -> str:
    loc = list(error["loc"])
    parts: list[str] = []
    if len(loc) >= 2 and loc[0] == "subscribers" and isinstance(loc[1], int):
        index = loc[1]
        sub_id = None
        if isinstance(raw, Mapping):
            subs = raw.get("subscribers")
            if isinstance(subs, list) and index < len(subs) and isinstance(subs[index], Mapping):
                sub_id = subs[index].get("id")
        parts.append(f"subscriber {sub_id!r}" if sub_id else f"subscribers[{index}]")
        loc = loc[2:]
    field = ".".join(str(p) for p in loc)
    where = " ".join(parts + ([f"field {field!r}"] if field else []))
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where or 'file'}: {message}"


def parse_config(
    raw: Any, *, source: str = "<config>", resolve_secrets: bool = True
) -> SubscribersConfig:
    """Validate parsed YAML. ``resolve_secrets=False`` leaves ``secret_env`` variables unread
    (for operator commands that never sign); workers always resolve them."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: must be a mapping with a 'subscribers' list")
    if "subscribers" not in raw:
        raise ConfigError(
            f"{source}: field 'subscribers': required (the list of subscribers, `[]` for none);"
            " a file without it may have been cut short"
        )
    try:
        return SubscribersConfig.model_validate(raw, context={RESOLVE_SECRETS: resolve_secrets})
    except ValidationError as exc:
        lines = [_describe(e, raw) for e in exc.errors(include_url=False, include_input=False)]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, never the text: PyYAML quotes the offending line, which may be a secret."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        # Keep quoted single characters ('\t', ':') and token kinds ('<scalar>'); hide anything
        # else quoted (a tag or an alias may be a pasted secret).
        problem = re.sub(r"'(?!<)[^'\s]{3,}'|\"[^\"\s]{3,}\"", "'...'", problem)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return where + problem
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {exc.position + 1}: not allowed in YAML (control character)"
    return "syntax error"


def parse_yaml(
    text: str, *, source: str = "<config>", resolve_secrets: bool = True
) -> SubscribersConfig:
    """Parse and validate the subscribers file's text, raising :class:`ConfigError`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    except (ValueError, OverflowError):  # e.g. an impossible date such as 2026-02-30
        raise ConfigError(f"{source}: not valid YAML: a value cannot be read (a date?)") from None
    return parse_config(raw, source=source, resolve_secrets=resolve_secrets)


def read_file(path: Path | str) -> str:
    """The subscribers file's text, raising :class:`ConfigError` when it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read subscribers file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def load_config(path: Path | str, *, resolve_secrets: bool = True) -> SubscribersConfig:
    """Read and validate the subscribers file, raising :class:`ConfigError` on any problem."""
    return parse_yaml(read_file(path), source=str(path), resolve_secrets=resolve_secrets)
