"""Bad input on the command line ends in one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from reseller_webhooks.worker.devserver.redis_server import free_port
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import Deployment, one_line_error


def test_data_file_missing_not_utf8_or_too_deep(deployment: Deployment, tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    result = deployment.cli("publish", "reseller.user.created", "--data", str(missing))
    one_line_error(result, f"--data {missing}: cannot read: No such file or directory")

    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(json.dumps(sample_user()).replace("Ada", "Ad\xe9").encode("latin-1"))
    result = deployment.cli("publish", "reseller.user.created", "--data", str(latin1))
    one_line_error(result, f"--data {latin1}: not UTF-8 text (byte ")

    deep = "[" * 100_000 + "]" * 100_000
    result = deployment.cli("publish", "--batch", "-", input=deep.encode())
    one_line_error(result, "--batch stdin: not valid JSON here: nested too deeply")

    result = deployment.cli("publish", "--batch", "-", input=b"{")
    one_line_error(result, "--batch stdin: not valid JSON: Expecting property name")

    result = deployment.cli("publish", "--batch", "-", input=b'{"event": 1}')
    one_line_error(result, "--batch: the file must hold a JSON array of {event, data} objects")


def test_batch_items_and_timestamps(deployment: Deployment, rdb: redis.Redis) -> None:
    result = deployment.cli("publish", "--batch", "-", input=b'["abc", 5, null]')
    one_line_error(
        result,
        "invalid event: [0]: must be an object {event, data}; [1]: must be an object"
        " {event, data}; [2]: must be an object {event, data}",
    )
    user = {**sample_user(), "createdAt": "0001-01-01T00:00:00+01:00"}
    result = deployment.cli(
        "publish", "reseller.user.created", "--data", "-", input=json.dumps(user).encode()
    )
    one_line_error(result, "data.createdAt: timestamp is out of range once converted to UTC")
    assert rdb.dbsize() == 0


def test_oversized_event_refused(deployment: Deployment, rdb: redis.Redis) -> None:
    user = sample_user()
    user["organization"]["description"] = "d" * 300_000
    deployment.settings["WEBHOOKS_MAX_BODY_BYTES"] = "400000"
    accepted = deployment.cli(
        "publish", "reseller.user.created", "--data", "-", input=json.dumps(user).encode()
    )
    assert accepted.returncode == 0, accepted.stderr
    rdb.flushall()
    deployment.settings["WEBHOOKS_MAX_BODY_BYTES"] = "262144"
    result = deployment.cli(
        "publish", "reseller.user.created", "--data", "-", input=json.dumps(user).encode()
    )
    one_line_error(result, "over the limit of 262144 bytes (WEBHOOKS_MAX_BODY_BYTES)")
    assert rdb.dbsize() == 0


@pytest.mark.parametrize(
    "url", ["http://:pw-4q@127.0.0.1:6379/0", "127.0.0.1:6379", "unix:///tmp/redis.sock"]
)
def test_unknown_redis_url_scheme(deployment: Deployment, url: str) -> None:
    deployment.settings["REDIS_URL"] = url
    result = deployment.cli("publish", "reseller.user.created", "--sample")
    one_line_error(
        result, "REDIS_URL: must be a URL starting with redis://, rediss:// or sentinel://"
    )
    assert "pw-4q" not in result.stderr


def test_unreachable_redis_is_exit_3_without_the_url(deployment: Deployment) -> None:
    deployment.subscriber("s", "http://127.0.0.1:9/s")
    deployment.settings["REDIS_URL"] = f"redis://:pw-8z@127.0.0.1:{free_port()}/0"
    for args in (("publish", "reseller.user.created", "--sample"), ("dlq", "list")):
        result = deployment.cli(*args)
        one_line_error(result, "error: Redis is unavailable (", code=3)
        assert "pw-8z" not in result.stderr + result.stdout


def test_enable_and_disable_refuse_unknown_ids(deployment: Deployment, rdb: redis.Redis) -> None:
    deployment.subscriber("known", "http://127.0.0.1:9/s")
    for command in ("enable", "disable"):
        result = deployment.cli("subscribers", command, "nope")
        one_line_error(result, "no subscriber 'nope' in ")
    assert rdb.dbsize() == 0
    assert deployment.cli("subscribers", "disable", "known").returncode == 0
    assert deployment.cli("subscribers", "enable", "known").returncode == 0


def test_commands_that_do_not_sign_need_no_secrets(deployment: Deployment) -> None:
    deployment.subscriber("known", "http://127.0.0.1:9/s")
    deployment.secrets.clear()  # the secret_env variable is not set
    status = deployment.cli("subscribers", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.split() == ["known", "ok"]
    assert deployment.cli("subscribers", "disable", "known").returncode == 0
    assert deployment.cli("subscribers", "check", "--without-secrets").returncode == 0
    check = deployment.cli("subscribers", "check")
    one_line_error(check, "secret_env: environment variable SECRET_KNOWN is not set")
    assert check.stderr.rstrip().endswith("or check everything else with --without-secrets")
    worker = deployment.start_worker(wait=False)
    assert worker.process.wait(timeout=60) != 0
    assert "secret_env: environment variable SECRET_KNOWN is not set" in worker.log()
