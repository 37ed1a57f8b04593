"""Every Redis connection, built in one place from the settings.

Three kinds of ``REDIS_URL`` are understood, the same way by redis-py (publisher, store,
scheduler, CLI) and by kombu (Celery's queues):

- ``redis://[:password@]host:port/db``: plain TCP;
- ``rediss://...``: TLS, the server certificate verified by default (a CA file, a client
  certificate and its key from ``WEBHOOKS_REDIS_CA_FILE`` / ``_CERT_FILE`` / ``_KEY_FILE``);
- ``sentinel://[:password@]h1:26379/db;sentinel://h2:26379;...`` (kombu's form): the master of
  ``WEBHOOKS_SENTINEL_MASTER`` as the Sentinels name it, found again after a failover. The
  password in the URL is the master's; ``WEBHOOKS_SENTINEL_PASSWORD`` the Sentinels'.

Bad combinations raise :class:`ConfigError` naming the variable; nothing here ever puts a
password in a message.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.sentinel import Sentinel

from reseller_webhooks.producers.errors import ConfigError, NotReplicatedError
from reseller_webhooks.producers.settings import ProducerSettings

log = logging.getLogger(__name__)

Scheme = Literal["redis", "rediss", "sentinel"]

#: TLS options a ``rediss://`` URL may carry in its query (the older way to configure them).
URL_TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}

#: Bounds on one socket operation: a master that vanished without closing its sockets (a host
#: or network failure, not a killed process) must not hang a call for ever.
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class TLS:
    cert_reqs: str = "required"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def redis_kwargs(self) -> dict[str, Any]:
        return {
            "ssl_cert_reqs": self.cert_reqs,
            "ssl_ca_certs": self.ca_file,
            "ssl_certfile": self.cert_file,
            "ssl_keyfile": self.key_file,
        }

    def kombu_options(self) -> dict[str, Any]:
        """``broker_use_ssl``: without it kombu connects to ``rediss://`` unverified."""
        options: dict[str, Any] = {"ssl_cert_reqs": CERT_REQS[self.cert_reqs]}
        for key, value in (
            ("ssl_ca_certs", self.ca_file),
            ("ssl_certfile", self.cert_file),
            ("ssl_keyfile", self.key_file),
        ):
            if value:
                options[key] = value
        return options


@dataclass(frozen=True)
class RedisTarget:
    """What ``REDIS_URL`` and its companion settings mean; :func:`redis_target` builds it."""

    scheme: Scheme
    url: str = field(repr=False)  # without TLS query options: those live in ``tls``
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    tls: TLS | None = None


def _db(path: str, variable: str) -> int:
    text = path.strip("/") or "0"
    if not text.isdigit():
        raise ConfigError(f"{variable}: the database after the host must be a number")
    return int(text)


def _tls_from(settings: ProducerSettings, query: dict[str, str]) -> TLS:
    cert_reqs = query.get("ssl_cert_reqs", "required").lower()
    if cert_reqs not in CERT_REQS:
        raise ConfigError("REDIS_URL: ssl_cert_reqs must be one of required, optional, none")

    def pick(setting: Path | None, option: str) -> str | None:
        return str(setting) if setting else query.get(option)

    tls = TLS(
        cert_reqs=cert_reqs,
        ca_file=pick(settings.redis_ca_file, "ssl_ca_certs"),
        cert_file=pick(settings.redis_cert_file, "ssl_certfile"),
        key_file=pick(settings.redis_key_file, "ssl_keyfile"),
    )
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError(
            "WEBHOOKS_REDIS_CERT_FILE and WEBHOOKS_REDIS_KEY_FILE: give both or neither"
        )
    for variable, value in (
        ("WEBHOOKS_REDIS_CA_FILE", tls.ca_file),
        ("WEBHOOKS_REDIS_CERT_FILE", tls.cert_file),
        ("WEBHOOKS_REDIS_KEY_FILE", tls.key_file),
    ):
        if value and not Path(value).is_file():
            raise ConfigError(f"{variable}: no such file")
    return tls


def redis_target(settings: ProducerSettings) -> RedisTarget:
    """Interpret ``REDIS_URL`` with the Sentinel and TLS settings (pure: reads no network)."""
    raw = settings.redis_url.strip()
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    tls_files = settings.redis_ca_file or settings.redis_cert_file or settings.redis_key_file
    if scheme == "sentinel":
        parts = [urlsplit(p.strip()) for p in raw.split(";") if p.strip()]
        if any(p.scheme.lower() != "sentinel" for p in parts):
            raise ConfigError("REDIS_URL: every part of a Sentinel URL starts with sentinel://")
        try:
            hosts = tuple((p.hostname or "", p.port or 26379) for p in parts)
        except ValueError:
            raise ConfigError("REDIS_URL: a Sentinel port is not a number") from None
        if any(not host for host, _ in hosts):
            raise ConfigError("REDIS_URL: every sentinel:// part needs a host")
        if not settings.sentinel_master:
            raise ConfigError(
                "WEBHOOKS_SENTINEL_MASTER: required with a sentinel:// REDIS_URL"
                " (the service name the Sentinels monitor)"
            )
        if tls_files:
            raise ConfigError(
                "WEBHOOKS_REDIS_CA_FILE: TLS is supported with rediss:// URLs, not sentinel://"
            )
        first = parts[0]
        return RedisTarget(
            scheme="sentinel",
            url=raw,
            sentinels=hosts,
            master=settings.sentinel_master,
            db=_db(first.path, "REDIS_URL"),
            username=unquote(first.username) if first.username else None,
            password=unquote(first.password) if first.password else None,
            sentinel_password=(
                settings.sentinel_password.get_secret_value()
                if settings.sentinel_password
                else None
            ),
        )
    if settings.sentinel_master:
        raise ConfigError("WEBHOOKS_SENTINEL_MASTER: set, but REDIS_URL is not sentinel://")
    if scheme == "redis" and tls_files:
        raise ConfigError("WEBHOOKS_REDIS_CA_FILE: TLS settings need a rediss:// REDIS_URL")
    split = urlsplit(raw)
    query = dict(parse_qsl(split.query))
    kept = [(k, v) for k, v in parse_qsl(split.query) if k not in URL_TLS_OPTIONS]
    url = urlunsplit(split._replace(query=urlencode(kept)))
    try:
        split.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ConfigError("REDIS_URL: the port is not a number") from None
    return RedisTarget(
        scheme="rediss" if scheme == "rediss" else "redis",
        url=url,
        db=_db(split.path, "REDIS_URL"),
        tls=_tls_from(settings, query) if scheme == "rediss" else None,
    )


def socket_options() -> dict[str, Any]:
    """The socket options of every Redis client of the deployment."""
    return {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
    }


def direct_client_options(target: RedisTarget) -> dict[str, Any]:
    """What a client of ``target`` (not through Sentinel) is made with besides its URL: the
    socket options and the TLS settings; redis-py's sync and asyncio clients take the same."""
    return {**socket_options(), **(target.tls.redis_kwargs() if target.tls else {})}


def redis_client(settings: ProducerSettings) -> redis.Redis:
    """The redis-py client for this deployment (thread-safe; one per process is enough)."""
    target = redis_target(settings)
    common = socket_options()
    if target.scheme == "sentinel":
        assert target.master is not None
        sentinel_kwargs = {**common}
        if target.sentinel_password:
            sentinel_kwargs["password"] = target.sentinel_password
        sentinel = Sentinel(
            list(target.sentinels),
            sentinel_kwargs=sentinel_kwargs,
            db=target.db,
            username=target.username,
            password=target.password,
            **common,
        )
        master = sentinel.master_for(target.master, redis_class=redis.Redis)
        return cast(redis.Redis, master)
    return redis.Redis.from_url(target.url, **direct_client_options(target))


def broker_options(settings: ProducerSettings) -> dict[str, Any]:
    """Celery's broker settings for this deployment: the same target and TLS as
    :func:`redis_client`, and reconnection without a limit (a long Redis outage is waited out)."""
    target = redis_target(settings)
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout_s,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
    }
    if target.scheme == "sentinel":
        transport["master_name"] = target.master
        if target.sentinel_password:
            transport["sentinel_kwargs"] = {"password": target.sentinel_password}
    options: dict[str, Any] = {
        "broker_url": target.url,
        "broker_transport_options": transport,
        "broker_connection_retry": True,
        "broker_connection_retry_on_startup": True,
        # None: reconnect for ever (kombu backs off 2 s more each time, at most 30 s).
        "broker_connection_max_retries": None,
    }
    if target.tls:
        options["broker_use_ssl"] = target.tls.kombu_options()
    return options


def publish_replicas(settings: ProducerSettings) -> int:
    """How many replicas must hold a published event before ``publish`` returns."""
    if settings.publish_replicas is not None:
        return settings.publish_replicas
    return 1 if redis_target(settings).scheme == "sentinel" else 0


class Replication:
    """Makes a write survive a failover: the command and a ``WAIT`` on one connection.

    ``WAIT`` counts the replicas that acknowledged the writes of the connection it is sent on, so
    it goes in the same pipeline as the write. While the master has no replica connected at all
    (a failover has just consumed it) there is nothing to wait for: the write is as safe as the
    master alone, and ``WAIT`` is skipped; the master is asked again (``ROLE``, no waiting) a
    second later.
    """

    NO_REPLICA_RECHECK_S = 1.0

    def __init__(self, client: redis.Redis, replicas: int, timeout_ms: int) -> None:
        self.client = client
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._alone_until = 0.0

    def run(self, script: Any, *, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script, then wait for the replicas (if any are wanted and exist)."""
        if self.replicas <= 0 or time.monotonic() < self._alone_until:
            return script(keys=keys, args=args)
        if self._alone_until and self._connected_replicas() == 0:  # still alone: do not wait
            self._alone_until = time.monotonic() + self.NO_REPLICA_RECHECK_S
            return script(keys=keys, args=args)
        self._alone_until = 0.0
        pipe = self.client.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        pipe.wait(self.replicas, self.timeout_ms)
        result, acked = pipe.execute()
        if int(acked) < self.replicas:
            connected = self._connected_replicas()
            if connected == 0:
                log.warning("the Redis master has no replica: publishing without waiting for one")
                self._alone_until = time.monotonic() + self.NO_REPLICA_RECHECK_S
            elif int(acked) < min(self.replicas, connected):
                raise NotReplicatedError(int(acked), self.replicas, self.timeout_ms)
        return result

    def _connected_replicas(self) -> int:
        role: Any = self.client.role()
        return len(role[2]) if role and role[0] in (b"master", "master") else 0


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _check_sentinels(target: RedisTarget) -> None:
    """The first Sentinel that answers must accept the password and know the master's name."""
    assert target.master is not None
    for host, port in target.sentinels:
        client = redis.Redis(
            host,
            port,
            password=target.sentinel_password,
            socket_timeout=CONNECT_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
        )
        try:
            address = client.sentinel_get_master_addr_by_name(target.master)
        except redis.AuthenticationError:
            address = _REFUSED
        except redis.ResponseError as exc:
            if not any(word in str(exc) for word in ("NOAUTH", "WRONGPASS", "invalid password")):
                raise
            address = _REFUSED
        except redis.ConnectionError:
            continue
        finally:
            client.close()
        if address is _REFUSED:
            raise ConfigError(
                f"WEBHOOKS_SENTINEL_PASSWORD: the Sentinel at {host}:{port} refused it"
                f" ({'wrong' if target.sentinel_password else 'it asks for one'})"
            )
        if not address:
            raise ConfigError(
                f"WEBHOOKS_SENTINEL_MASTER: the Sentinel at {host}:{port} monitors no master"
                f" named {target.master!r}"
            )
        return


_REFUSED: Any = object()


def operator_fault(exc: redis.ConnectionError) -> ConfigError | None:
    """A connection failure only an operator can fix (a TLS certificate that does not verify, a
    refused handshake), as a :class:`ConfigError` that says what to set; else ``None``."""
    failure = _tls_failure(exc)
    if failure is None:
        return None
    if isinstance(failure, ssl.SSLCertVerificationError):
        reason = failure.verify_message or "certificate verify failed"
        return ConfigError(
            f"REDIS_URL: the Redis server's TLS certificate did not verify ({reason});"
            " set WEBHOOKS_REDIS_CA_FILE to the CA that signs it"
        )
    reason = failure.reason or type(failure).__name__
    return ConfigError(
        f"REDIS_URL: the TLS handshake with Redis failed ({reason}); check"
        " WEBHOOKS_REDIS_CERT_FILE / WEBHOOKS_REDIS_KEY_FILE if Redis asks for a client"
        " certificate"
    )


def check_redis(settings: ProducerSettings) -> str | None:
    """Connect once, as a worker does before it says it is ready.

    A certificate that does not verify, a failed TLS handshake or a refused password can only
    be fixed by an operator: they raise :class:`ConfigError`. An unreachable server returns the
    error's text, for the caller to log and keep trying.
    """
    target = redis_target(settings)
    if target.scheme == "sentinel":
        _check_sentinels(target)
    client = redis_client(settings)
    try:
        client.ping()
    except redis.AuthenticationError:
        raise ConfigError("REDIS_URL: Redis refused the user name or password") from None
    except redis.ConnectionError as exc:
        fault = operator_fault(exc)
        if fault is None:
            return str(exc)
        raise fault from None
    finally:
        client.close()
    return None
