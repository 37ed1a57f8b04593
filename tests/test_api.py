"""The HTTP ingest API (``reseller-webhooks api``) as a producer meets it: what it records, how
it refuses (RFC 9457 problems naming the field and the rule, nothing recorded), who may use it,
and its OpenAPI document, against which every response seen here is checked. One real API
process on the session's Redis serves the module; the rules are table-tested beside it."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr

from reseller_webhooks.producers.errors import (
    ConfigError,
    IdempotencyKeyReusedError,
    InvalidEventError,
    NotReplicatedError,
    StoreResetError,
    UnavailableError,
)
from reseller_webhooks.producers.publisher import IDEMPOTENCY_KEY, validate_item
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.api.idempotency import batch_keys, header_problem
from reseller_webhooks.worker.api.problems import field_rule, from_error
from reseller_webhooks.worker.api.tokens import LOCAL_PRODUCER, parse_tokens
from reseller_webhooks.worker.cli.commands import main
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import Deployment, WorkerProcess
from tests.openapi_check import SPEC, SPEC_PATH, check_response, validator

#: Constant, so that every xdist worker collects the same test ids (they name the headers).
TOKENS = {"shop": "shop-" + "5h0p" * 8, "billing": "bill-" + "b1ll" * 8}
TOKENS_SETTING = ",".join(f"{name}:{token}" for name, token in TOKENS.items())
SHOP = {"Authorization": f"Bearer {TOKENS['shop']}"}
#: Small limits, so that going over them costs the suite nothing.
BATCH_LIMIT = 65536
BODY_TIMEOUT_S = "1"


def event(**data: Any) -> dict[str, Any]:
    return {"event": "reseller.user.created", "data": {**sample_user(), **data}}


# -- the rules, table-tested -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("shop", "entry 1: must be name:token"),
        (f"shop:{'x' * 23}", "entry 1 (shop): the token must be at least 24"),
        (f"shop:{'x' * 24} y", "entry 1 (shop): the token must be at least 24"),
        (f"a b:{'x' * 24}", "entry 1: must be name:token"),
        (f"shop:{'x' * 24},shop:{'y' * 24}", "entry 2: the name shop is given twice"),
        (f"shop:{'x' * 24},crm:{'x' * 24}", "entry 2 (crm): the same token as another producer"),
    ],
)
def test_bad_tokens_are_refused_by_entry_and_rule_never_by_value(setting: str, error: str) -> None:
    with pytest.raises(ConfigError, match=r"^WEBHOOKS_API_TOKENS: ") as refused:
        parse_tokens(SecretStr(setting))
    assert error in str(refused.value)
    assert "x" * 23 not in str(refused.value)


@pytest.mark.parametrize(
    ("authorization", "producer"),
    [
        (f"Bearer {TOKENS['shop']}", "shop"),
        (f"bearer {TOKENS['billing']}", "billing"),
        (f"Bearer  {TOKENS['shop']} ", "shop"),
        (f"Basic {TOKENS['shop']}", None),
        (f"Bearer {TOKENS['shop']}x", None),
        (f"Bearer {TOKENS['shop'][:-1]}", None),
        ("Bearer ", None),
        (TOKENS["shop"], None),
        (None, None),
    ],
)
def test_which_producer_a_header_names(authorization: str | None, producer: str | None) -> None:
    assert parse_tokens(SecretStr(TOKENS_SETTING)).identify(authorization) == producer
    assert parse_tokens(None).identify(authorization) == LOCAL_PRODUCER  # no tokens: open


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ([], None),
        (["order-42"], None),
        (["x" * 200], None),
        (["x" * 201], "Idempotency-Key: must be 1 to 200 printable ASCII"),
        (["has space"], "Idempotency-Key: must be 1 to 200 printable ASCII"),
        (["naïve"], "Idempotency-Key: must be 1 to 200 printable ASCII"),
        (["a", "b"], "Idempotency-Key: give it once"),
    ],
)
def test_idempotency_key_header(values: list[str], problem: str | None) -> None:
    found = header_problem(values)
    assert (found is None) if problem is None else (found or "").startswith(problem)


def test_a_batch_key_gives_each_event_a_valid_key_of_its_own() -> None:
    keys = batch_keys("x" * 200, 3)
    assert len(set(keys)) == 3
    assert all(IDEMPOTENCY_KEY.match(k) for k in keys)
    assert batch_keys("x" * 200, 3) == keys
    assert not set(batch_keys("y", 3)) & set(keys)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("data.email: Field required", {"field": "data.email", "rule": "Field required"}),
        (
            "[2].event: unknown event type 'x'",
            {"field": "[2].event", "rule": "unknown event type 'x'"},
        ),
        ("no field here", {"field": "body", "rule": "no field here"}),
    ],
)
def test_a_problem_line_names_field_and_rule(line: str, expected: dict[str, str]) -> None:
    assert field_rule(line) == expected


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidEventError(["data.email: Field required"]), 422),
        (UnavailableError("ConnectionError"), 503),
        (NotReplicatedError(0, 1, 1000), 503),
        (StoreResetError("the store came back empty"), 503),
        (IdempotencyKeyReusedError(), 422),
        (ConfigError("x"), 500),
    ],
)
def test_each_publishing_error_has_its_status(error: Any, status: int) -> None:
    assert from_error(error).status == status
    assert from_error(error).status == getattr(error, "status", 500)


def test_the_openapi_document_is_valid_31_with_valid_schemas() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    for schema in SPEC["components"]["schemas"].values():
        validator(schema).check_schema(schema)
    assert set(SPEC["paths"]) == {"/v1/events", "/v1/events/batch", "/healthz", "/openapi.yaml"}


# -- one API process -------------------------------------------------------------------------


@dataclass
class Api:
    process: WorkerProcess
    url: str
    client: httpx.Client

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request; its response must be one the OpenAPI document describes."""
        content = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        response = self.client.request(method, path, content=content, headers=headers)
        check_response(method, path, response.status_code, response.headers, response.content)
        return response

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("headers", SHOP)
        return self.call("POST", path, body, **kwargs)


KEYS = Keys("rw")
#: What the API's publisher keeps whatever it is asked: which store this is, and its counts.
IDENTITY = {KEYS.store_identity, KEYS.global_tally}


@pytest.fixture
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """The session's Redis emptied of every record but the store's identity and counts: the
    module's API process remembers the store, and a flushed one is a store reset to it (it would
    refuse to publish, as it should)."""
    client = redis.Redis.from_url(redis_server.url)
    stale = [k for k in client.scan_iter(count=1000) if k.decode() not in IDENTITY]
    if stale:
        client.delete(*stale)
    yield client
    client.close()


def recorded(client: redis.Redis) -> list[bytes]:
    """Every key a request left behind (the store's identity and counts are no record)."""
    return [k for k in client.scan_iter(count=1000) if k.decode() not in IDENTITY]


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    deployment = Deployment(tmp_path=tmp_path_factory.mktemp("api"), redis_url=redis_server.url)
    process, url = deployment.start_api(
        WEBHOOKS_API_TOKENS=TOKENS_SETTING,
        WEBHOOKS_API_BODY_TIMEOUT_S=BODY_TIMEOUT_S,
        WEBHOOKS_API_MAX_REQUEST_BYTES=str(BATCH_LIMIT),
    )
    with httpx.Client(base_url=url, timeout=10) as client:
        yield Api(process, url, client)
    deployment.kill_all()


def test_one_event_is_recorded_and_a_retry_with_its_key_records_nothing(
    api: Api, rdb: redis.Redis, keys: Keys
) -> None:
    headers = {**SHOP, "Idempotency-Key": "order-1"}
    first = api.post("/v1/events", event(), headers=headers)
    assert first.status_code == 202
    event_id = first.json()["id"]
    again = api.post("/v1/events", event(), headers=headers)
    assert (again.status_code, again.json()) == (202, {"id": event_id})
    assert rdb.lrange(keys.pending, 0, -1) == [event_id.encode()]
    recorded = json.loads(rdb.hget(keys.event(event_id), "body") or b"")
    assert recorded["event"] == "reseller.user.created"
    assert recorded["data"] == sample_user()


def test_a_key_sent_again_with_another_event_is_refused_and_records_nothing(
    api: Api, rdb: redis.Redis, keys: Keys
) -> None:
    headers = {**SHOP, "Idempotency-Key": "order-2"}
    first = api.post("/v1/events", event(), headers=headers)
    assert first.status_code == 202
    before = sorted(recorded(rdb))
    other = api.post("/v1/events", event(id="usr_other"), headers=headers)
    assert other.status_code == 422
    problem = other.json()
    assert problem["type"].endswith(":idempotency-key-reused")
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert "usr_other" not in other.text
    assert sorted(recorded(rdb)) == before
    assert rdb.lrange(keys.pending, 0, -1) == [first.json()["id"].encode()]


def test_a_batch_is_recorded_in_order_and_under_one_key_once(
    api: Api, rdb: redis.Redis, keys: Keys
) -> None:
    batch = [event(id=f"usr_{n}") for n in range(3)]
    headers = {**SHOP, "Idempotency-Key": "import-7"}
    answer = api.post("/v1/events/batch", batch, headers=headers)
    assert answer.status_code == 202
    ids = answer.json()["ids"]
    assert api.post("/v1/events/batch", batch, headers=headers).json() == {"ids": ids}
    assert rdb.lrange(keys.pending, 0, -1) == [i.encode() for i in ids]
    users = [json.loads(rdb.hget(keys.event(i), "body") or b"")["data"]["id"] for i in ids]
    assert users == ["usr_0", "usr_1", "usr_2"]


OTHER = {"Authorization": f"Bearer {TOKENS['billing']}"}


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "field", "rule"),
    [
        ("/v1/events", event(), {}, 401, "Authorization", "must be Bearer"),
        ("/v1/events", event(), {"Authorization": "Bearer nope"}, 401, "Authorization", ""),
        ("/v1/events", event(), {"Authorization": f"Basic {TOKENS['shop']}"}, 401, "", ""),
        ("/v1/events/batch", [event()], {}, 401, "Authorization", ""),
        ("/v1/events", b'{"event": ', SHOP, 400, "body", "not valid JSON: Expecting value"),
        ("/v1/events", b'{"event": NaN}', SHOP, 400, "body", "NaN is not JSON"),
        ("/v1/events", b"\xff", SHOP, 400, "body", "not valid UTF-8"),
        ("/v1/events", event(), {**SHOP, "Idempotency-Key": "a b"}, 400, "Idempotency-Key", ""),
        ("/v1/events", [], OTHER, 422, "body", "must be an object {event, data}"),
        ("/v1/events", {**event(), "x": 1}, OTHER, 422, "x", "unknown field"),
        ("/v1/events", {"data": {}}, OTHER, 422, "event", "field required"),
        ("/v1/events/batch", event(), OTHER, 422, "body", "must be a JSON array"),
        ("/v1/events/batch", [event(), event(email="no")], OTHER, 422, "[1].data.email", ""),
        (
            "/v1/events",
            event(password="hunter2hunter2"),
            OTHER,
            422,
            "data.password",
            "not allowed: a password never leaves the producer",
        ),
        (
            "/v1/events",
            {"event": "reseller.user.deleted", "data": sample_user()},
            OTHER,
            422,
            "event",
            "unknown event type 'reseller.user.deleted'; expected one of reseller.user.created,"
            " reseller.user.updated",
        ),
    ],
)
def test_a_refused_request_names_field_and_rule_and_records_nothing(
    api: Api,
    rdb: redis.Redis,
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    field: str,
    rule: str,
) -> None:
    raw = body if isinstance(body, bytes) else None
    answer = api.post(path, None if raw else body, raw=raw, headers=headers)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == status
    if field:
        assert any(e["field"] == field and rule in e["rule"] for e in problem["errors"]), problem
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert recorded(rdb) == []


def test_a_contract_violation_reads_as_the_publisher_says_it(api: Api, rdb: redis.Redis) -> None:
    body = {"event": "reseller.user.updated", "data": {**sample_user(), "email": "x", "role": ""}}
    with pytest.raises(InvalidEventError) as python:
        validate_item(body)
    answer = api.post("/v1/events", body)
    assert answer.status_code == 422
    assert answer.json()["errors"] == [field_rule(line) for line in python.value.problems]
    assert {e["field"] for e in answer.json()["errors"]} == {"data.email", "data.role"}
    assert recorded(rdb) == []


def raw_request(api: Api, head: str, body: bytes = b"") -> bytes:
    """Send ``head`` (and ``body``) on a socket of its own; what comes back before it closes."""
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize(
    ("path", "authorization", "status", "limit"),
    [
        ("/v1/events", SHOP["Authorization"], 413, "over the limit of 262144 bytes"),
        ("/v1/events/batch", SHOP["Authorization"], 413, f"over the limit of {BATCH_LIMIT} bytes"),
        ("/v1/events", "Bearer nope", 401, ""),
    ],
)
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    api: Api, rdb: redis.Redis, path: str, authorization: str, status: int, limit: str
) -> None:
    """Headers alone, declaring 10 MB: the answer comes without a byte of the body."""
    head = (
        f"POST {path} HTTP/1.1\nHost: x\nAuthorization: {authorization}\n"
        "Content-Type: application/json\nContent-Length: 10000000\n"
    )
    answer = raw_request(api, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == str(status).encode()
    headers_block, _, body = rest.partition(b"\r\n\r\n")
    headers = dict(
        line.decode().split(": ", 1) for line in headers_block.split(b"\r\n") if b": " in line
    )
    check_response("POST", path, status, headers, body)
    assert limit in json.loads(body)["detail"]
    assert recorded(rdb) == []


def test_a_chunked_body_over_the_limit_is_refused(api: Api, rdb: redis.Redis) -> None:
    piece = json.dumps(event()).encode()

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(BATCH_LIMIT // len(piece) + 2):
            yield piece + b","
        yield piece + b"]"

    answer = api.client.post("/v1/events/batch", content=chunks(), headers=SHOP)
    check_response("POST", "/v1/events/batch", answer.status_code, answer.headers, answer.content)
    assert answer.status_code == 413
    assert recorded(rdb) == []


def answer_until_closed(sock: socket.socket) -> bytes:
    """What the server sent before closing the connection. A server that closes while the client's
    bytes are still unread makes the kernel reset the connection (RST) instead of ending it (FIN):
    both are a close, and what was received before it is the answer."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_a_trickled_body_times_out_and_records_nothing(api: Api, rdb: redis.Redis) -> None:
    """A body sent a byte at a time: the server closes the connection at its body timeout and
    records nothing; other producers are served meanwhile."""
    body = json.dumps(event()).encode()
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: {SHOP['Authorization']}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    stop = threading.Event()

    def trickle() -> None:
        for byte in body[:-1]:
            if stop.wait(0.1):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        assert api.call("GET", "/healthz").status_code == 200
        assert answer_until_closed(sock) == b""  # closed without an answer
    finally:
        stop.set()
        sender.join(timeout=10)
        sock.close()
    assert recorded(rdb) == []
    assert api.post("/v1/events", event()).status_code == 202


def test_health_the_served_document_and_metrics_by_producer(api: Api) -> None:
    assert api.call("GET", "/healthz").json() == {"status": "ok"}
    served = api.call("GET", "/openapi.yaml")
    assert served.content == SPEC_PATH.read_bytes()
    assert api.post("/v1/events", event(), headers=OTHER).status_code == 202
    assert api.post("/v1/events", {"event": "x"}, headers=OTHER).status_code == 422
    assert (
        api.post("/v1/events", event(), headers={"Authorization": "Bearer no"}).status_code == 401
    )
    # A 404 keeps the connection: the request after it, on the same socket, is answered too.
    answers = raw_request(
        api, "GET /nowhere HTTP/1.1\nHost: x\n\nGET /healthz HTTP/1.1\nHost: x\nConnection: close\n"
    )
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"404", b"200"]
    metrics = api.client.get("/metrics").text
    assert 'webhooks_api_requests_total{producer="billing",status="202"}' in metrics
    assert 'webhooks_api_requests_total{producer="(none)",status="401"}' in metrics
    assert 'webhooks_api_ingest_seconds_count{producer="billing"}' in metrics
    log = api.process.log()
    assert "422 POST /v1/events producer=billing" in log  # refusals are logged, by producer
    for token in TOKENS.values():
        assert token not in metrics
        assert token not in log


@pytest.mark.parametrize(
    ("args", "tokens", "error"),
    [
        (["--host", "0.0.0.0"], None, "the API needs producer tokens to listen on 0.0.0.0"),
        ([], "shop", "WEBHOOKS_API_TOKENS: entry 1: must be name:token"),
        ([], f"shop:{'s' * 30},crm:short", "WEBHOOKS_API_TOKENS: entry 2 (crm): the token must"),
    ],
)
def test_the_api_refuses_to_start_by_name(
    redis_url: str, args: list[str], tokens: str | None, error: str
) -> None:
    """Before it listens or reaches Redis: one line naming the rule, never a token."""
    env = {"REDIS_URL": redis_url, "WEBHOOKS_API_TOKENS": tokens or ""}
    result = CliRunner().invoke(main, ["api", "--port", "0", *args], env=env)
    assert result.exit_code == 2
    assert result.output.startswith("error: ")
    assert result.output.count("\n") == 1
    assert error in result.output
    assert "s" * 30 not in result.output
    assert "short" not in result.output


@pytest.mark.slow
def test_a_store_that_came_back_empty_is_refused_and_nothing_recorded(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The API's commit checks the store as every publisher does: once Redis has lost what it
    held, a publish answers 503 store-reset and records nothing."""
    from tests.conftest import start_own_redis

    server = start_own_redis(tmp_path_factory.mktemp("lost-redis"))
    client = redis.Redis.from_url(server.url)
    deployment = Deployment(tmp_path=tmp_path_factory.mktemp("api-reset"), redis_url=server.url)
    try:
        _, url = deployment.start_api(WEBHOOKS_API_TOKENS=TOKENS_SETTING)
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.post("/v1/events", json=event(), headers=SHOP).status_code == 202
            client.flushall()  # the store's identity and published count are gone
            deadline = time.monotonic() + 10  # the check runs at most once a second
            while True:
                answer = http.post("/v1/events", json=event(id="usr_after"), headers=SHOP)
                if answer.status_code != 202 or time.monotonic() > deadline:
                    break
                client.flushall()
            assert answer.status_code == 503
            assert answer.json()["type"].endswith(":store-reset")
            assert answer.headers["retry-after"] == "1"
            before = sorted(recorded(client))
            refused = http.post("/v1/events", json=event(id="usr_refused"), headers=SHOP)
            assert refused.status_code == 503
            assert sorted(recorded(client)) == before
    finally:
        deployment.kill_all()
        client.close()
        server.stop()
