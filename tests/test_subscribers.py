"""The subscribers file: every problem named by subscriber and field; secrets never shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.worker.config.subscribers import load_config, parse_config, parse_yaml
from tests.helpers import new_secret


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
            {"subscribers": [sub(rate_limit_per_s=0)]},
            "subscriber 'acme-crm' field 'rate_limit_per_s': Input should be greater than 0",
        ),
        (
            {"subscribers": [sub(rate_limit_per_s=20, rate_burst=0)]},
            "subscriber 'acme-crm' field 'rate_burst': Input should be greater than or equal to 1",
        ),
        (
            {"subscribers": [sub(rate_burst=5)]},
            "subscriber 'acme-crm': rate_burst: needs rate_limit_per_s",
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
    example = Path(__file__).parent.parent / "worker/devserver/examples/subscribers.yaml"
    config = load_config(example)
    assert [s.id for s in config.subscribers] == ["acme-crm", "audit-log"]


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read subscribers file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("subscribers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


CRLF_REFUSED = (
    "must be visible ASCII characters and inner spaces (no CR, LF or other control characters"
)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Tenant": "acme\r\nX-Injected: 1"}, f"the value of X-Tenant {CRLF_REFUSED}"),
        ({"X-Tenant": "acme\n"}, f"the value of X-Tenant {CRLF_REFUSED}"),
        ({"X-Tenant": "a\x00b"}, f"the value of X-Tenant {CRLF_REFUSED}"),
        ({"X-Tenant": " acme"}, f"the value of X-Tenant {CRLF_REFUSED}"),
        ({"X-Tenant": "café"}, f"the value of X-Tenant {CRLF_REFUSED}"),
        ({"X-Tenant ": "v-7k2q"}, "name 'X-Tenant ' is not an HTTP token"),
        ({"X Tenant": "v-7k2q"}, "name 'X Tenant' is not an HTTP token"),
        ({"X-Tenant:": "v-7k2q"}, "name 'X-Tenant:' is not an HTTP token"),
        ({"": "v-7k2q"}, "name '' is not an HTTP token"),
        ({"X-T\r\n": "v-7k2q"}, "name 'X-T\\r\\n' is not an HTTP token"),
        ({"User-Agent": "v-7k2q"}, "may not set User-Agent: the worker sets it itself"),
        ({"Webhook-Sequence": "v-7k2q"}, "may not set Webhook-Sequence: the worker sets it"),
        ({"X-Tenant": "v-1aa", "x-tenant": "v-2bb"}, "X-Tenant and x-tenant are the same header"),
    ],
)
def test_headers_refused_at_config_time(headers: dict[str, str], message: str) -> None:
    text = problem({"subscribers": [sub(headers=headers)]})
    assert f"subscriber 'acme-crm' field 'headers': {message}" in text
    for value in headers.values():
        assert value not in text  # values may be tokens: never quoted


@pytest.mark.parametrize(
    "headers",
    [{"X-Tenant": "acme"}, {"X-Api-Key": "a b\tc"}, {"X-Empty": ""}, {"x-#$%&'*+.^_`|~": "1"}],
)
def test_valid_headers_accepted(headers: dict[str, str]) -> None:
    assert dict(parse_config({"subscribers": [sub(headers=headers)]}).subscribers[0].headers) == (
        headers
    )


def test_authorization_header_and_url_credentials_refused_together() -> None:
    both = sub(url="https://u:p@hooks.acme.example/r", headers={"authorization": "Bearer t0k"})
    text = problem({"subscribers": [both]})
    assert "subscriber 'acme-crm': headers: Authorization is also set by the credentials" in text
    assert "t0k" not in text
    parse_config({"subscribers": [sub(headers={"Authorization": "Bearer t0k"})]})
    parse_config({"subscribers": [sub(url="https://u:p@hooks.acme.example/r")]})


def test_secret_pasted_into_secret_env_is_not_echoed() -> None:
    secret = new_secret()
    text = problem({"subscribers": [sub(secret=None, secret_env=secret)]})
    assert "field 'secret_env': must be the name of an environment variable, not the secret" in text
    assert secret not in text
    assert secret.removeprefix("whsec_")[:8] not in text
    text = problem({"subscribers": [sub(secret=None, previous_secret_env="1-BAD")]})
    assert "field 'previous_secret_env': must be the name of an environment variable" in text


def test_yaml_error_on_a_secret_line_does_not_quote_it(tmp_path: Path) -> None:
    secret = new_secret()
    path = tmp_path / "subscribers.yaml"
    path.write_text(
        "subscribers:\n"
        "  - id: acme-crm\n"
        "    url: https://hooks.acme.example/r\n"
        f"    secret: {secret}: oops\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}: not valid YAML: line 4, column {len(secret) + 13}: "
        "mapping values are not allowed here"
    )
    path.write_text(f'subscribers: [{{secret: "{secret}\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert secret.removeprefix("whsec_")[:8] not in str(err.value)
    path.write_text(f"subscribers: !{secret} x\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert secret.removeprefix("whsec_")[:8] not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, "not valid YAML: nested too deeply"),
        ("created: 2026-02-30\n", "not valid YAML: a value cannot be read"),
        ("a: \x01\n", "not valid YAML: character 4: not allowed in YAML"),
    ],
)
def test_unreadable_yaml_is_one_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_bytes(b"subscribers: [\xff]\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)


def test_loading_without_secrets_checks_everything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    raw = {"subscribers": [sub(secret=None, secret_env="NOT_SET_HERE")]}
    config = parse_config(raw, resolve_secrets=False)
    assert config.subscribers[0].signing_keys == ()
    assert "environment variable NOT_SET_HERE is not set" in problem(raw)  # workers refuse
    with pytest.raises(ConfigError, match="set either secret or secret_env, not both"):
        parse_config({"subscribers": [sub(secret_env="NOT_SET_HERE")]}, resolve_secrets=False)
    with pytest.raises(ConfigError, match="secret: must start with 'whsec_'"):
        parse_config({"subscribers": [sub(secret="nope")]}, resolve_secrets=False)


def test_subscriber_repr_hides_url_credentials_and_header_values() -> None:
    config = parse_config(
        {
            "subscribers": [
                sub(url="https://u:pw-3x@hooks.acme.example/r?token=tk-9", headers={"X-K": "hv-1"})
            ]
        }
    )
    text = repr(config)
    assert "https://hooks.acme.example/r" in text
    for hidden in ("pw-3x", "tk-9", "hv-1"):
        assert hidden not in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [b, c\nd: *whsec_abcdef\n", "line 2, column 2: expected ',' or ']', but got ':'"),
        ("a: *whsec_abcdef\n", "line 1, column 4: found undefined alias '...'"),
        ("a: [1, 2]]\n", "line 1, column 10: expected <block end>, but found ']'"),
        ("a: !whsec_x/y+z= 1\n", "could not determine a constructor for the tag '...'"),
        ('a: "\\q"\n', "line 1, column 6: found unknown escape character 'q'"),
    ],
)
def test_yaml_errors_keep_the_rule_and_hide_quoted_text(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_yaml(text)
    assert str(err.value).startswith("<config>: not valid YAML: ")
    assert message in str(err.value)
    assert "whsec_" not in str(err.value)
