"""What REDIS_URL and its companion settings mean, for redis-py and kombu alike (no network)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from reseller_webhooks.producers.connection import broker_options, publish_replicas, redis_target
from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.settings import ProducerSettings, redact_redis_url

S3 = "sentinel://h1:26379;sentinel://h2:26380;sentinel://h3"


def settings(url: str, **extra: Any) -> ProducerSettings:
    return ProducerSettings(redis_url=url, **extra)


@pytest.mark.parametrize(
    ("url", "extra", "expected"),
    [
        ("redis://127.0.0.1:6379/0", {}, {"scheme": "redis", "db": 0, "tls": None}),
        ("redis://:pw@h:1/3", {}, {"scheme": "redis", "db": 3, "url": "redis://:pw@h:1/3"}),
        (
            S3,
            {"sentinel_master": "svc"},
            {
                "scheme": "sentinel",
                "master": "svc",
                "db": 0,
                "sentinels": (("h1", 26379), ("h2", 26380), ("h3", 26379)),
            },
        ),
        (
            "sentinel://:pw@h1:26379/2;sentinel://h2:26380",
            {"sentinel_master": "svc", "sentinel_password": "sp"},
            {
                "sentinels": (("h1", 26379), ("h2", 26380)),
                "db": 2,
                "password": "pw",
                "sentinel_password": "sp",
            },
        ),
        ("redis://h/0", {"sentinel_master": ""}, {"scheme": "redis", "master": None}),
        ("rediss://h:6380/0", {}, {"scheme": "rediss", "url": "rediss://h:6380/0"}),
        (
            "rediss://h:6380/0?ssl_cert_reqs=none&health_check_interval=5",
            {},
            {"url": "rediss://h:6380/0?health_check_interval=5"},
        ),
    ],
)
def test_targets(url: str, extra: dict[str, Any], expected: dict[str, Any]) -> None:
    target = redis_target(settings(url, **extra))
    for name, value in expected.items():
        assert getattr(target, name) == value, name


@pytest.mark.parametrize(
    ("url", "extra", "message"),
    [
        (S3, {}, "WEBHOOKS_SENTINEL_MASTER: required with a sentinel:// REDIS_URL"),
        ("redis://h/0", {"sentinel_master": "svc"}, "WEBHOOKS_SENTINEL_MASTER: set, but"),
        ("sentinel://h1;redis://h2", {"sentinel_master": "s"}, "every part of a Sentinel URL"),
        ("sentinel://:26379", {"sentinel_master": "s"}, "every sentinel:// part needs a host"),
        (
            "http://h/0",
            {},
            "REDIS_URL: must be a URL starting with redis://, rediss:// or sentinel://",
        ),
        ("redis://h/zero", {}, "REDIS_URL: the database after the host must be a number"),
        ("redis://h:port/0", {}, "REDIS_URL: is not a valid Redis URL (check the host, the port"),
        ("rediss://h/0?ssl_cert_reqs=maybe", {}, "ssl_cert_reqs must be one of"),
        ("redis://h/0", {"redis_ca_file": "ca.pem"}, "TLS settings need a rediss://"),
        (S3, {"sentinel_master": "s", "redis_ca_file": "ca.pem"}, "not sentinel://"),
        ("rediss://h/0", {"redis_ca_file": "/nonexistent/ca.pem"}, "CA_FILE: no such file"),
        ("rediss://h/0", {"redis_cert_file": "c.pem"}, "give both or neither"),
    ],
)
def test_bad_combinations_name_the_variable(url: str, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        redis_target(settings(url, **extra))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_secrets_never_in_errors_or_repr() -> None:
    s = settings(
        "sentinel://:masterpw@h1:26379", sentinel_master="s", sentinel_password="sentinelpw"
    )
    target = redis_target(s)
    assert "masterpw" not in repr(target)
    assert "sentinelpw" not in repr(target)
    assert "sentinelpw" not in repr(s)
    with pytest.raises(ConfigError) as info:
        redis_target(settings("sentinel://:masterpw@h1:x", sentinel_master="s"))
    assert "masterpw" not in str(info.value)


def test_rediss_verifies_by_default_on_the_queue_too(tmp_path: Path) -> None:
    options = broker_options(settings("rediss://h:6380/0"))
    assert options["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "c.key"))
    for path in (ca, cert, key):
        path.write_text("-")
    s = settings("rediss://h:6380/0", redis_ca_file=ca, redis_cert_file=cert, redis_key_file=key)
    assert broker_options(s)["broker_use_ssl"] == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": str(ca),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
    }
    # The older query form still works, for both sides, and the settings take precedence.
    s = settings(f"rediss://h/0?ssl_cert_reqs=required&ssl_ca_certs={key}", redis_ca_file=ca)
    assert broker_options(s)["broker_use_ssl"]["ssl_ca_certs"] == str(ca)
    assert broker_options(s)["broker_url"] == "rediss://h/0"
    # An explicit opt-out stays possible, and explicit.
    s = settings("rediss://h/0?ssl_cert_reqs=none")
    assert broker_options(s)["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_NONE}


def test_sentinel_broker_options() -> None:
    options = broker_options(settings(S3, sentinel_master="svc", sentinel_password="sp"))
    transport = options["broker_transport_options"]
    assert options["broker_url"] == S3
    assert transport["master_name"] == "svc"
    assert transport["sentinel_kwargs"] == {"password": "sp"}
    assert "broker_use_ssl" not in options


def test_plain_redis_reconnects_for_ever() -> None:
    options = broker_options(settings("redis://h/0", visibility_timeout_s=7))
    assert options["broker_connection_max_retries"] is None
    assert options["broker_connection_retry"] is True
    assert options["broker_transport_options"]["visibility_timeout"] == 7
    assert "broker_use_ssl" not in options


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:secret@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:secret@h:1/0", "rediss://user:***@h:1/0"),
        (
            "sentinel://:pw@h1:26379;sentinel://:pw@h2:26379",
            "sentinel://:***@h1:26379;sentinel://:***@h2:26379",
        ),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_redis_url(url) == shown


@pytest.mark.parametrize(
    ("url", "extra", "replicas"),
    [
        ("redis://h/0", {}, 0),
        (S3, {"sentinel_master": "s"}, 1),
        (S3, {"sentinel_master": "s", "publish_replicas": 0}, 0),
        ("redis://h/0", {"publish_replicas": 2}, 2),
    ],
)
def test_publish_replicas_default(url: str, extra: dict[str, Any], replicas: int) -> None:
    assert publish_replicas(settings(url, **extra)) == replicas


def test_publish_does_not_wait_when_the_master_has_no_replica(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Asked for a replica, a master without one publishes anyway (there is nothing a failover
    could promote) and says so once; the records are written."""
    import redis

    from reseller_webhooks.producers.publisher import Publisher
    from reseller_webhooks.producers.wire import Keys
    from reseller_webhooks.worker.devserver.samples import sample_user

    settings = ProducerSettings(
        redis_url=redis_url, publish_replicas=1, publish_replicas_timeout_ms=200
    )
    with (
        caplog.at_level("WARNING", logger="reseller_webhooks.producers.connection"),
        Publisher(settings) as pub,
    ):
        ids = [pub.user_created(sample_user()) for _ in range(5)]
    assert len(set(ids)) == 5
    warnings = [r for r in caplog.records if "has no replica" in r.getMessage()]
    assert len(warnings) == 1
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.llen(Keys("rw").pending) == 5
    finally:
        client.close()
