"""Fuzzing the publish path and the subscribers loader: whatever comes in, the only exceptions that
come out are the project's own (``WebhooksError``). Budgets are bounded so the suite stays quick."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import h11
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reseller_webhooks.producers.dialects import graphql, json_patch, rest_create, rest_update
from reseller_webhooks.producers.errors import WebhooksError
from reseller_webhooks.producers.events import build_event
from reseller_webhooks.producers.publisher import validate_batch
from reseller_webhooks.producers.user import ResellerUser
from reseller_webhooks.worker.config.subscribers import parse_yaml
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import new_secret

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """RFC 3339-looking strings across the whole datetime range, with odd offsets."""
    edges = st.sampled_from([datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)])
    when = draw(edges | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    minutes = draw(st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59))
    text = when.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat()
    return draw(st.sampled_from([text, text.replace("+00:00", "Z"), text[:-6], text + "Z"]))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _paths(item, (*prefix, key))
    return paths


SAMPLE = sample_user()
USER_PATHS = _paths(SAMPLE)


@st.composite
def mutated_users(draw: st.DrawFn) -> Any:
    """The sample user with a few fields replaced, dropped or added: near-valid input."""
    user = copy.deepcopy(SAMPLE)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(USER_PATHS))
        parent = user
        for key in path[:-1]:
            if not isinstance(parent, dict) or not isinstance(parent.get(key), dict):
                break
            parent = parent[key]
        else:
            action = draw(st.sampled_from(["value", "timestamp", "drop", "extra"]))
            if action == "drop":
                parent.pop(path[-1], None)
            elif action == "extra":
                parent[draw(st.text(max_size=12))] = draw(json_values)
            elif action == "timestamp":
                parent[path[-1]] = draw(timestamps())
            else:
                parent[path[-1]] = draw(json_values)
    return draw(st.one_of(st.just(user), json_values))


def only_project_errors(call: Callable[[], Any]) -> None:
    with contextlib.suppress(WebhooksError):
        call()


@FUZZ
@given(
    event=st.one_of(st.sampled_from(["reseller.user.created", "x"]), json_values),
    data=mutated_users(),
)
def test_build_event_raises_only_project_errors(event: Any, data: Any) -> None:
    try:
        built = build_event(event, data)
    except WebhooksError:
        return
    assert built.body().startswith(b'{"event":')


@FUZZ
@given(field=st.sampled_from(["createdAt", "updatedAt", "lastLoginAt"]), value=timestamps())
def test_any_timestamp_is_accepted_or_refused_as_a_problem(field: str, value: str) -> None:
    only_project_errors(lambda: build_event("reseller.user.created", {**SAMPLE, field: value}))


batch_items = st.one_of(
    st.fixed_dictionaries({"event": st.just("reseller.user.updated"), "data": mutated_users()}),
    st.tuples(st.just("reseller.user.created"), mutated_users()),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    json_values,
)


@FUZZ
@given(items=st.one_of(st.lists(batch_items, max_size=4), json_values))
def test_validate_batch_raises_only_project_errors(items: Any) -> None:
    only_project_errors(lambda: validate_batch(items))


@FUZZ
@given(
    body=st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(
                [
                    "firstName",
                    "lastName",
                    "email",
                    "role",
                    "company",
                    "organizationId",
                    "password",
                    "allowCustomerPortalAccess",
                ]
            ),
            json_values,
        ),
    )
)
def test_rest_dialects_raise_only_project_errors(body: Any) -> None:
    current = ResellerUser.model_validate(SAMPLE)
    only_project_errors(lambda: rest_create.parse_request(body))
    only_project_errors(lambda: rest_update.apply_update(current, rest_update.parse_request(body)))


operations = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]),
                "path": st.sampled_from(["/firstName", "/roles/0", "/roles/-", "/emails", "", "/"])
                | st.text(max_size=12),
                "value": json_values,
                "from": st.sampled_from(["/lastName", "/roles/0"]) | st.text(max_size=8),
            }
        ),
        json_values,
    ),
    max_size=3,
)


@FUZZ
@given(ops=st.one_of(operations, json_values))
def test_json_patch_raises_only_project_errors(ops: Any) -> None:
    current = ResellerUser.model_validate(SAMPLE)
    only_project_errors(lambda: json_patch.patch_user("t", current.id, current, ops))


@FUZZ
@given(
    query=st.one_of(
        st.just(
            "mutation($id: ID!, $u: ResellerUserEdit!) "
            "{ resellerEditUser(id: $id, resellerUserEdit: $u) { id } }"
        ),
        st.text(max_size=60),
    ),
    variables=st.one_of(st.fixed_dictionaries({"id": json_values, "u": json_values}), json_values),
)
def test_graphql_dialect_raises_only_project_errors(query: Any, variables: Any) -> None:
    only_project_errors(lambda: graphql.parse_edit(query, variables))


SECRET = new_secret()


@st.composite
def subscriber_files(draw: st.DrawFn) -> str:
    """YAML text: a near-valid file with fuzzed values, or mangled text."""
    sub: dict[str, Any] = {
        "id": draw(st.sampled_from(["acme", "a b", ""]) | st.text(max_size=8)),
        "url": draw(
            st.sampled_from(["https://hooks.example/r", "https://u:p@h.example/", "ftp://x"])
            | st.text(max_size=20)
        ),
        "events": draw(st.lists(st.sampled_from(["reseller.user.*", "*", "nope"]), max_size=2)),
        "secret": SECRET,
        "headers": draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(sub)), max_size=2)):
        sub[key] = draw(json_values)
    if draw(st.booleans()):
        sub["retry"] = draw(
            st.dictionaries(
                st.sampled_from(["schedule_s", "jitter", "retry_statuses"]), json_values
            )
        )
    raw = {"allow_private_networks": draw(json_values), "subscribers": [sub]}
    text = yaml.safe_dump(raw, allow_unicode=True)
    cut = draw(st.integers(min_value=0, max_value=len(text)))
    mangled = text[:cut] + draw(st.text(max_size=6)) + text[cut:]
    return draw(st.sampled_from([text, mangled])) if draw(st.booleans()) else draw(st.text())


@FUZZ
@given(text=subscriber_files())
def test_subscribers_loader_raises_only_config_errors(text: str) -> None:
    try:
        config = parse_yaml(text)
    except WebhooksError as exc:
        message = str(exc)
    else:
        message = ""
    assert SECRET.removeprefix("whsec_")[:10] not in message
    if message:
        return
    for sub in config.subscribers:  # whatever is accepted can be sent as HTTP headers
        h11.Request(
            method="POST",
            target="/",
            headers=[("host", "h"), *((k.encode(), v.encode()) for k, v in sub.headers.items())],
        )


@pytest.mark.parametrize("text", ["{", "a: [", "!!binary x", "? [a]\n: b", "a: *b", "&a a: 1"])
def test_subscribers_loader_examples(text: str) -> None:
    with pytest.raises(WebhooksError):
        parse_yaml(text)
