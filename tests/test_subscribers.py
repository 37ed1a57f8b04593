"""The subscribers file: every problem named by subscriber and field; secrets never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from producers.errors import ConfigError
from tests.conftest import new_secret
from worker.subscribers import load_config, parse_config


def sub(**extra: Any) -> dict[str, Any]:
    return {
        "id": "acme-crm",
        "url": "https://hooks.acme.example/r",
        "events": ["reseller.user.*"],
        "secret": new_secret(),
        **extra,
    }


def problem(raw: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    return str(err.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"subscribers": [sub(url="ftp://x.example/")]},
            "subscriber 'acme-crm' field 'url': URL scheme should be 'http' or 'https'",
        ),
        (
            {"subscribers": [sub(events=[])]},
            "subscriber 'acme-crm' field 'events': Tuple should have at least 1 item",
        ),
        (
            {"subscribers": [sub(events=["reseller.usr.*"])]},
            "subscriber 'acme-crm' field 'events': pattern 'reseller.usr.*' matches no event type",
        ),
        (
            {"subscribers": [sub(secret="not-a-secret")]},
            "subscriber 'acme-crm': secret: must start with 'whsec_'",
        ),
        (
            {"subscribers": [sub(secret="whsec_c2hvcnQ=")]},
            "subscriber 'acme-crm': secret: must encode 24 to 64 random bytes, got 5",
        ),
        (
            {"subscribers": [sub(secret=None, secret_env="NO_SUCH_VARIABLE_SET")]},
            "secret_env: environment variable NO_SUCH_VARIABLE_SET is not set",
        ),
        (
            {"subscribers": [sub(secret=None)]},
            "subscriber 'acme-crm': one of secret or secret_env is required",
        ),
        (
            {"subscribers": [sub(timeout_s=0)]},
            "subscriber 'acme-crm' field 'timeout_s': Input should be greater than 0",
        ),
        (
            {"subscribers": [sub(headers={"Webhook-Signature": "x"})]},
            "subscriber 'acme-crm' field 'headers': may not set Webhook-Signature",
        ),
        (
            {"subscribers": [sub(colour="red")]},
            "subscriber 'acme-crm' field 'colour': Extra inputs are not permitted",
        ),
        (
            {"subscribers": [sub(id="bad id!")]},
            "subscriber 'bad id!' field 'id': String should match pattern",
        ),
        (
            {"subscribers": [sub(), sub()]},
            "field 'subscribers': duplicate subscriber id 'acme-crm'",
        ),
        (
            {"subscribers": [sub(retry={"schedule_s": [5, 10]})]},
            "subscriber 'acme-crm' field 'retry.schedule_s': the first entry is the first attempt",
        ),
        (
            {"retry": {"jitter": 1.5}, "subscribers": []},
            "field 'retry.jitter': Input should be less than 1",
        ),
        (
            {"subscribers": [{"url": "https://x.example/"}]},
            "subscribers[0] field 'id': Field required",
        ),
        (["not", "a", "mapping"], "must be a mapping"),
    ],
)
def test_problems_name_subscriber_and_field(raw: Any, message: str) -> None:
    assert message in problem(raw)


def test_secret_values_never_appear_in_errors_or_reprs() -> None:
    secret = "whsec_" + "A" * 8  # valid base64, too short: the message must not echo it
    text = problem({"subscribers": [sub(secret=secret)]})
    assert "AAAAAAAA" not in text
    good = new_secret()
    config = parse_config({"subscribers": [sub(secret=good)]})
    assert good not in repr(config)
    assert good.removeprefix("whsec_") not in repr(config)


def test_secret_from_environment_and_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    current, previous = new_secret(), new_secret()
    monkeypatch.setenv("ACME_SECRET", current)
    monkeypatch.setenv("ACME_SECRET_OLD", previous)
    config = parse_config(
        {
            "subscribers": [
                sub(secret=None, secret_env="ACME_SECRET", previous_secret_env="ACME_SECRET_OLD")
            ]
        }
    )
    assert len(config.subscribers[0].signing_keys) == 2


def test_matching_and_retry_override() -> None:
    config = parse_config(
        {
            "retry": {"schedule_s": [0, 5, 300], "jitter": 0.1},
            "subscribers": [
                sub(id="all"),
                sub(
                    id="created",
                    events=["reseller.user.created"],
                    retry={"schedule_s": [0, 1], "retry_statuses": [404]},
                ),
                sub(id="off", enabled=False),
            ],
        }
    )
    assert [s.id for s in config.matching("reseller.user.created")] == ["all", "created"]
    assert [s.id for s in config.matching("reseller.user.updated")] == ["all"]
    assert config.matching("reseller.user.deleted") == ()
    created = config.by_id["created"]
    assert config.policy(created).schedule_s == (0, 1)
    assert config.policy(created).jitter == 0.1  # inherited from the global policy
    assert config.policy(created).retry_statuses == frozenset({404})
    assert config.policy(config.by_id["all"]).schedule_s == (0, 5, 300)


def test_example_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ACME_WEBHOOK_SECRET", "AUDIT_WEBHOOK_SECRET", "AUDIT_WEBHOOK_SECRET_OLD"):
        monkeypatch.setenv(name, new_secret())
    example = Path(__file__).parent.parent / "worker/examples/subscribers.yaml"
    config = load_config(example)
    assert [s.id for s in config.subscribers] == ["acme-crm", "audit-log"]


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read subscribers file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("subscribers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
