"""The screening transports: what they let through, the URL schemes that use them, Sentinel."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection
from kombu.simple import SimpleQueue
from kombu.transport.virtual.base import Base64

from reseller_webhooks.worker.devserver.redis_server import (
    RedisServer,
    find_redis_server,
    free_port,
)
from reseller_webhooks.worker.queue import kombu_overrides as broker
from reseller_webhooks.worker.queue.consumer import task_body_problem
from reseller_webhooks.worker.queue.envelope import (
    arguments_shape,
    screen,
    screen_unacked,
    shape,
)
from reseller_webhooks.worker.queue.visibility import visibility_warning
from tests.helpers import wait_until

CODECS = {"base64": Base64()}


def message(**changes: Any) -> dict[str, Any]:
    body = base64.b64encode(b'[[["msg_1"]], {}, {}]').decode()
    base: dict[str, Any] = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"task": "webhooks.dispatch", "id": "t1"},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": "t1",
            "delivery_info": {"exchange": "rw.deliveries", "routing_key": "rw.deliveries"},
        },
    }
    for path, value in changes.items():
        node = base
        *parents, last = path.split("__")
        for name in parents:
            node = node[name]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return base


def m(**changes: Any) -> str:
    return json.dumps(message(**changes))


T = "webhooks.dispatch"


@pytest.mark.parametrize(
    ("raw", "reason", "task"),
    [
        (m(), None, None),
        (m(body=""), None, None),  # kombu delivers an empty body as it is
        (m(properties__body_encoding="utf-8", body="[[], {}, {}]"), None, None),
        (b"\x00\x01 not json", "not JSON: Expecting value", "?"),
        (b"\xff\xfe", "not JSON", "?"),
        (b"", "not JSON", "?"),
        (b"[1, 2]", "not a message envelope: a JSON array, expected an object", "?"),
        (b"42", "a JSON number", "?"),
        (b'"x"', "a JSON string", "?"),
        (b"null", "a JSON null", "?"),
        (b'{"task": "webhooks.dispatch"}', "field 'properties': null, must be an object", "?"),
        (m(properties=...), "field 'properties': null", T),
        (m(properties=[]), "field 'properties': array", T),
        (m(properties__delivery_tag=...), "'properties.delivery_tag'", T),
        (m(properties__delivery_tag=7), "'properties.delivery_tag'", T),
        (m(properties__delivery_info=...), "'properties.delivery_info'", T),
        (m(properties__delivery_info={"exchange": "x"}), "'properties.delivery_info'", T),
        (m(headers=...), "field 'headers': null, must be an object", "?"),
        (m(headers="x"), "field 'headers': string", "?"),
        (m(headers__task=...), None, None),  # Celery's part: not a task
        (m(**{"content-type": 1}), "field 'content-type'", T),
        (m(body=12), "field 'body': number, must be a string", T),
        (m(body="!!!notb64"), "field 'body': not valid base64", T),
        (m(properties__body_encoding="rot13"), "'rot13' is not one of base64, utf-8", T),
        (m(properties__body_encoding=5), "'properties.body_encoding'", T),
    ],
)  # fmt: skip
def test_screen(raw: bytes | str, reason: str | None, task: str | None) -> None:
    stray = screen(raw, CODECS)
    if reason is None:
        assert stray is None
    else:
        assert stray is not None
        assert reason in stray.reason
        assert stray.task == task


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([[["msg_1"]], {}, {}], None),
        ([[["msg_1"]], {}, None], None),
        (([1, 2, 3], {"a": 1}, {"chain": None}), None),  # wrong arguments are the task's part
        ({}, "must be [args, kwargs, embed]"),
        ("x", "must be [args, kwargs, embed]"),
        ([[], {}], "must be [args, kwargs, embed]"),
        ([[], {}, {}, {}], "must be [args, kwargs, embed]"),
        ([{"a": 1}, {}, {}], "args must be an array"),
        ([[], [], {}], "kwargs must be an object"),
        ([[], {}, "x"], "embed must be an object or null"),
        ([[], {}, []], "embed must be an object or null"),
    ],
)
def test_task_body_problem(body: Any, problem: str | None) -> None:
    found = task_body_problem(body)
    assert (found is None) == (problem is None)
    if problem:
        assert found is not None
        assert problem in found


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (json.dumps([message(), "rw.deliveries", "rw.deliveries"]), None),
        (b"garbage", "unacked entry not JSON"),
        (json.dumps(message()), "must be [envelope, exchange, routing_key]"),
        (json.dumps([message(), "rw.deliveries"]), "must be [envelope, exchange, routing_key]"),
        (json.dumps([message(), 1, "rw.deliveries"]), "must be [envelope, exchange, routing_key]"),
        (json.dumps([[1], "x", "y"]), "not a message envelope: a JSON array"),
        (json.dumps([message(properties=...), "x", "y"]), "field 'properties'"),
    ],
)
def test_screen_unacked(raw: bytes | str, reason: str | None) -> None:
    stray = screen_unacked(raw, CODECS)
    assert (stray is None) == (reason is None)
    if reason:
        assert stray is not None
        assert reason in stray.reason


@pytest.mark.parametrize(
    ("raw", "content_type", "task_id", "expected"),
    [
        (b"ab\xffcd", None, None, {"bytes": 5}),
        (
            "é" * 300,
            "application/json",
            "t-1",
            {"bytes": 600, "content_type": "application/json", "task_id": "t-1"},
        ),
        (None, 7, ["x"], {"bytes": 0}),
        (b"x", "c" * 90, "", {"bytes": 1, "content_type": "c" * 40}),
    ],
)
def test_a_record_keeps_the_shape_of_an_entry_never_its_bytes(
    raw: Any, content_type: Any, task_id: Any, expected: dict[str, Any]
) -> None:
    assert shape(raw, content_type, task_id) == expected


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ([1, "a@example.com", None], {}, {"args": ["number", "string", "null"], "kwargs": []}),
        ({"password": "x"}, {"z": 1, "a": "secret"}, {"args": "object", "kwargs": ["a", "z"]}),
        (None, None, {"args": "null", "kwargs": []}),
    ],
)
def test_wrong_arguments_are_recorded_by_kind_and_name(
    args: Any, kwargs: Any, expected: dict[str, Any]
) -> None:
    assert arguments_shape(args, kwargs) == expected


@pytest.mark.parametrize(
    ("visibility_s", "longest_s", "warned"),
    [
        (60, 15, False),
        (20, 15, False),  # exactly the timeout plus the 5 s margin
        (19.5, 15, True),
        (3, 15, True),
        (60, 120, True),
        (4, 0, True),  # the margin alone
    ],
)
def test_visibility_warning(visibility_s: float, longest_s: float, warned: bool) -> None:
    text = visibility_warning(visibility_s, longest_s)
    assert (text is not None) == warned
    if text:
        assert f"WEBHOOKS_VISIBILITY_TIMEOUT_S is {visibility_s:g} s" in text
        assert f"longest subscriber timeout_s ({longest_s:g} s)" in text


@pytest.mark.parametrize(
    ("url", "transport"),
    [
        ("redis://127.0.0.1:6379/0", broker.Transport),
        ("rediss://127.0.0.1:6380/0?ssl_cert_reqs=required", broker.Transport),
        ("sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380", broker.SentinelTransport),
    ],
)
def test_every_redis_scheme_uses_a_screening_transport(url: str, transport: type) -> None:
    broker.install()
    conn = Connection(url)
    assert type(conn.transport) is transport
    conn.maybe_switch_next()  # failing over re-reads the scheme from the next URL
    assert type(conn.transport) is transport
    conn.release()


def test_what_celery_and_kombu_publish_passes_the_screen(redis_url: str, rdb: redis.Redis) -> None:
    sender = Celery(broker=redis_url, set_as_current=False)
    sender.send_task("webhooks.dispatch", args=[["msg_1"]], queue="screen.celery")
    sender.close()
    with Connection(redis_url) as conn:
        conn.SimpleQueue("screen.kombu").put({"any": ["json", 1]}, priority=5)
    entries = rdb.lrange("screen.celery", 0, -1)
    for key in rdb.keys("screen.kombu*"):  # a priority other than 0 has its own list
        entries += rdb.lrange(key, 0, -1)
    assert len(entries) == 2
    assert [screen(e, CODECS) for e in entries] == [None, None]


def consume_past_a_stray(conn: Connection, rdb: redis.Redis, name: str) -> list[tuple[Any, ...]]:
    """Push a stray entry and a message; both BRPOP and RPOP drop the stray, deliver the message."""
    strays: list[tuple[Any, ...]] = []
    broker.on_stray_message(lambda *a: strays.append(a))
    queue: SimpleQueue = conn.SimpleQueue(name)
    try:
        rdb.lpush(name, b"[1, 2]")
        queue.put({"n": 1})
        got = queue.get(timeout=10)  # drain_events: BRPOP
        assert got.payload == {"n": 1}
        got.ack()
        assert strays == [
            ("?", "not a message envelope: a JSON array, expected an object", b"[1, 2]")
        ]

        rdb.lpush(name, b"not json")
        queue.put({"n": 2})
        payloads = []
        for _ in range(3):  # basic_get: RPOP; the first call pops the stray and finds nothing
            try:
                item = queue.get_nowait()
            except queue.Empty:
                continue
            payloads.append(item.payload)
            item.ack()
            break
        assert payloads == [{"n": 2}]
        assert [s[1].split(":")[0] for s in strays] == ["not a message envelope", "not JSON"]
        assert rdb.llen(name) == 0
        assert rdb.hlen("unacked") == 0
    finally:
        queue.close()
        broker.on_stray_message(None)
    return strays


def test_the_redis_transport_drops_a_stray_entry_and_delivers_the_next(
    redis_url: str, rdb: redis.Redis
) -> None:
    broker.install()
    with Connection(redis_url) as conn:
        assert type(conn.transport) is broker.Transport
        consume_past_a_stray(conn, rdb, "screen.redis")


@pytest.fixture
def sentinel(redis_server: RedisServer, tmp_path: Path) -> Iterator[int]:
    """A real Redis Sentinel watching the session's Redis as master ``webhooks``."""
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor webhooks 127.0.0.1 {redis_server.port} 1\n"
    )
    process = subprocess.Popen(
        [find_redis_server(os.environ.get("REDIS_SERVER")), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)

    def ready() -> bool:
        try:
            return bool(client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "webhooks"))
        except redis.ConnectionError:
            time.sleep(0.05)
            return process.poll() is not None

    try:
        wait_until(ready, what="redis sentinel")
        assert process.poll() is None, "redis-server --sentinel exited"
        yield port
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def test_the_sentinel_transport_drops_a_stray_entry_and_delivers_the_next(
    sentinel: int, rdb: redis.Redis
) -> None:
    broker.install()
    url = f"sentinel://127.0.0.1:{sentinel}"
    with Connection(url, transport_options={"master_name": "webhooks"}) as conn:
        assert type(conn.transport) is broker.SentinelTransport
        consume_past_a_stray(conn, rdb, "screen.sentinel")


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server serving TLS only, with a self-signed certificate for 127.0.0.1."""
    binary, openssl = find_redis_server(os.environ.get("REDIS_SERVER")), shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    port = free_port()
    log = tmp_path / "redis-tls.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(cert), "--tls-key-file", str(key),
             "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
             "--save", "", "--dir", str(tmp_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert))

    def ready() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            time.sleep(0.05)
            return process.poll() is not None

    try:
        wait_until(ready, what="redis-server with TLS")
        if process.poll() is not None:
            if "tls-port" in log.read_text(errors="replace"):
                pytest.skip(f"{binary} was built without TLS")
            pytest.fail(f"redis-server with TLS exited: {log.read_text()[-500:]}")
        yield port, cert
    finally:
        client.close()
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def test_the_rediss_transport_drops_a_stray_entry_and_delivers_the_next(
    tls_redis: tuple[int, Path],
) -> None:
    port, cert = tls_redis
    broker.install()
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
    rdb = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert))
    try:
        with Connection(url) as conn:
            assert type(conn.transport) is broker.Transport
            consume_past_a_stray(conn, rdb, "screen.rediss")
    finally:
        rdb.close()
