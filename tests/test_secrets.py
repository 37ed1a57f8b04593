"""Secrets never leave: the Redis password, subscriber secrets, URL credentials and header values
appear in no report Celery makes, no log line, no dead letter and no operator command's output."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.settings import ProducerSettings, redact_redis_url
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.devserver.receiver import Receiver, Reply
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.queue.app import make_app
from tests.helpers import IN_CI, Deployment, Script, settled, wait_until

PASSWORD = "rpw-" + secrets.token_hex(12)


def masked(url: str) -> str:
    """A test id without the password: the same in every session that collects it."""
    return url.replace(PASSWORD, "<password>")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://default:hunter2@h/0", "redis://default:***@h/0"),
        ("redis://hunter2@h/0", "redis://***@h/0"),
        ("rediss://h:6380/0?password=hunter2", "rediss://h:6380/0?***"),
        (
            "sentinel://:hunter2@a:1;sentinel://:hunter2@b:2",
            "sentinel://:***@a:1;sentinel://:***@b:2",
        ),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("hunter2", "***"),
    ],
)
def test_redis_urls_are_redacted(url: str, shown: str) -> None:
    assert redact_redis_url(url) == shown


def test_settings_repr_hides_the_password() -> None:
    settings = WorkerSettings(redis_url=f"redis://:{PASSWORD}@127.0.0.1:6379/0")
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings)
    assert "redis://:***@127.0.0.1:6379/0" in repr(settings)
    assert settings.redis_url.endswith("@127.0.0.1:6379/0")  # the value itself is intact


@pytest.mark.parametrize(
    "url",
    [f"http://:{PASSWORD}@h/0", f"{PASSWORD}", f"unix://:{PASSWORD}@/tmp/redis.sock"],
    ids=masked,
)
def test_unknown_schemes_refused_without_echoing(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        ProducerSettings(redis_url=url)
    assert str(err.value) == (
        "REDIS_URL: must be a URL starting with redis://, rediss:// or sentinel://"
    )


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@h:notaport/0",
        f"redis://:{PASSWORD}@h:99999999/0",
        f"redis://:{PASSWORD}@[::1/0",
        f"redis://:{PASSWORD}@h/0?db=x{PASSWORD}",
        f"sentinel://:{PASSWORD}@h:1;sentinel://:{PASSWORD}@h:port",
    ],
    ids=masked,
)
def test_malformed_redis_urls_refused_without_echoing(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        ProducerSettings(redis_url=url)
    assert str(err.value).startswith("REDIS_URL: is not a valid Redis URL (check the host")


def test_settings_stay_out_of_celery_conf() -> None:
    settings = WorkerSettings(redis_url=f"redis://:{PASSWORD}@127.0.0.1:6379/0")
    app = make_app(settings)
    table = repr(app.conf.table(with_defaults=True))
    assert "webhooks_settings" not in table
    assert PASSWORD not in table
    assert app.webhooks_settings is settings


def everything_in(client: redis.Redis) -> str:
    """Every key and value in Redis, as text."""
    parts = []
    for key in client.scan_iter("*"):
        kind = client.type(key).decode()
        if kind == "string":
            value: object = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "zset":
            value = client.zrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        else:
            value = kind
        parts.append(f"{key!r} {value!r}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def protected_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of its own that requires a password."""
    try:
        server = RedisServer(
            tmp_path_factory.mktemp("redis-auth"),
            binary=os.environ.get("REDIS_SERVER"),
            password=PASSWORD,
        ).start()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"CI=true and no redis-server could be started: {exc}")
        pytest.skip(f"no redis-server available: {exc}")
    yield server
    server.stop()


@pytest.fixture
def dep(protected_redis: RedisServer, tmp_path: Path) -> Iterator[Deployment]:
    client = redis.Redis.from_url(protected_redis.url)
    client.flushall()
    client.close()
    deployment = Deployment(tmp_path=tmp_path, redis_url=protected_redis.url)
    yield deployment
    deployment.kill_all()


@pytest.mark.slow
def test_no_secret_appears_anywhere(
    dep: Deployment,
    protected_redis: RedisServer,
    tmp_path: Path,
    receiver: Receiver,
    script: Script,
) -> None:
    client = redis.Redis.from_url(protected_redis.url)
    keys = Keys("rw")
    ok_secret = dep.subscriber("ok", f"{receiver.url}/ok", headers={"X-Api-Key": "hdr-9f3k2"})
    bad_url = receiver.url.replace("http://", "http://hook-user:url-pw-7c1d@") + "/bad?token=q-5e8a"
    bad_secret = dep.subscriber("bad", bad_url, retry={"schedule_s": [0]})
    script.always("/bad?token=q-5e8a", Reply(400, body=b"no"))
    hidden = [PASSWORD, ok_secret, bad_secret, "hdr-9f3k2", "url-pw-7c1d", "q-5e8a"]
    hidden += [s.removeprefix("whsec_") for s in (ok_secret, bad_secret)]

    worker = dep.start_process("-v", "worker", "--loglevel", "DEBUG", ready=" ready.")
    outputs: dict[str, str] = {}

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = dep.cli(*args)
        outputs[" ".join(args)] = result.stdout + result.stderr
        assert result.returncode == expect, (args, result.stderr)
        return result

    published = run("publish", "reseller.user.created", "--sample").stdout.split()
    wait_until(lambda: client.zcard(keys.dead) == 1, what="a dead letter for 'bad'")
    wait_until(lambda: settled(client, keys), what="deliveries finished")
    assert [r.headers["webhook-id"] for r in receiver.received if r.path == "/ok"] == published
    dead_id = f"{published[0]}:bad"

    conf = dep.inspect("conf")
    outputs["celery inspect conf"] = conf.stdout + conf.stderr
    assert "broker_url" in conf.stdout, conf.stdout + conf.stderr  # the worker did answer
    assert "webhooks_settings" not in conf.stdout

    run("subscribers", "check")
    run("subscribers", "check", "--without-secrets")
    run("subscribers", "status")
    run("subscribers", "disable", "bad", "--reason", "testing")
    run("subscribers", "enable", "bad")
    run("subscribers", "enable", "nope", expect=2)
    run("dlq", "list")
    run("dlq", "list", "--json")
    run("dlq", "show", dead_id)
    run("dlq", "show", dead_id, "--body")
    run("dlq", "messages")
    run("dlq", "replay", dead_id)
    wait_until(lambda: client.zcard(keys.dead) == 1, what="the replay dead-lettered again")
    stored = everything_in(client)
    assert dead_id in stored  # the dead letter and its attempt log are in what is searched
    run("dlq", "purge", "--all", "--yes")
    run("publish", "reseller.user.created", "--data", str(tmp_path / "missing.json"), expect=2)
    wrong = protected_redis.url.replace(PASSWORD, "wrong-pw-41b0")
    refused = subprocess.run(
        [sys.executable, "-m", "reseller_webhooks.worker", "dlq", "list"],
        env={**dep.env, "REDIS_URL": wrong},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 3
    assert refused.stderr.strip() == "error: Redis is unavailable (AuthenticationError)"
    assert "wrong-pw-41b0" not in refused.stdout + refused.stderr

    worker.stop()
    log = worker.log()
    assert " DEBUG " in log  # the worker really logged at debug level
    client.close()
    for secret in hidden:
        for name, text in outputs.items():
            assert secret not in text, f"{secret!r} in the output of {name}"
        assert secret not in log, f"{secret!r} in the worker log"
        assert secret not in stored, f"{secret!r} stored in Redis"
