"""Producers that are not Python publish through the ingest API: ``curl`` and a Node script
(Node's own ``fetch``) against a real API process, a real worker and a receiver that verifies
every signature. Each event arrives once; refused requests record nothing; with Redis down the
API answers 503 and a retry under the same key publishes once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import IN_CI, ROOT, Deployment, new_secret, wait_until
from tests.openapi_check import check_response

TOKEN = "crm-node-" + "t0k3n" * 6
NODE_CLIENT = ROOT / "tests" / "clients" / "publish.mjs"
CLIENTS, EACH = 4, 250


def need(program: str) -> str:
    """The program's path; a test without it skips, and fails under CI=true."""
    found = shutil.which(program)
    if found is None:
        if IN_CI:
            pytest.fail(f"CI=true and {program} is not installed")
        pytest.skip(f"{program} is not installed")
    return found


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, object]:
        return dict(json.loads(self.body))


def curl(url: str, *args: str, token: str | None = TOKEN, body: bytes | None = None) -> Answer:
    """``curl`` as a shell script runs it (a body from stdin); the final response, after any
    ``100 Continue``."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    done = subprocess.run(
        [need("curl"), "-sS", "-i", "--max-time", "30", *auth, *args, url],
        input=body,
        capture_output=True,
        timeout=60,
        check=True,
    )
    raw = done.stdout
    while True:
        head, _, raw = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status >= 200:
            break
    headers = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n")[1:])
    return Answer(status, {k.lower(): v for k, v in headers.items()}, raw)


def curl_post(url: str, path: str, body: bytes, *args: str, token: str | None = TOKEN) -> Answer:
    """POST ``body`` as JSON; the answer must be one the OpenAPI document describes."""
    json_body = ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-"]
    answer = curl(f"{url}{path}", *json_body, *args, token=token, body=body)
    check_response("POST", path, answer.status, answer.headers, answer.body)
    return answer


def one_event(user_id: str) -> bytes:
    return json.dumps(
        {"event": "reseller.user.created", "data": {**sample_user(), "id": user_id}}
    ).encode()


@dataclass
class Stack:
    url: str
    receiver: Receiver
    redis: redis.Redis
    keys: Keys

    def delivered(self) -> Counter[str]:
        """webhook-id -> how many times it arrived; every arrival must have verified."""
        assert all(r.verified for r in self.receiver.received)
        return Counter(r.headers["webhook-id"] for r in self.receiver.received)

    def events_recorded(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(match=self.keys.event("*"), count=1000))


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A worker delivering to a verifying receiver, and the API with one producer token."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    deployment = Deployment(tmp_path=tmp_path_factory.mktemp("clients"), redis_url=redis_server.url)
    secret = new_secret()
    with Receiver(secret=secret) as receiver:
        deployment.subscriber("crm", f"{receiver.url}/hook", secret=secret)
        deployment.start_worker()
        _, url = deployment.start_api(WEBHOOKS_API_TOKENS=f"crm-node:{TOKEN}")
        yield Stack(url, receiver, client, Keys("rw"))
        deployment.kill_all()
    client.close()


def test_curl_publishes_an_event_and_a_batch_each_arrives_once_signed(stack: Stack) -> None:
    first = curl_post(stack.url, "/v1/events", one_event("usr_curl"), "-H", "Idempotency-Key: c-1")
    assert first.status == 202
    again = curl_post(stack.url, "/v1/events", one_event("usr_curl"), "-H", "Idempotency-Key: c-1")
    assert again.json == first.json
    batch = b"[" + b",".join(one_event(f"usr_b{n}") for n in range(3)) + b"]"
    answer = curl_post(stack.url, "/v1/events/batch", batch)
    assert answer.status == 202
    ids = [str(first.json["id"]), *answer.json["ids"]]  # type: ignore[misc]
    wait_until(lambda: set(stack.delivered()) >= set(ids), what="the curl events delivered")
    assert all(stack.delivered()[i] == 1 for i in ids)
    bodies = {r.headers["webhook-id"]: r.json for r in stack.receiver.received}
    assert bodies[ids[1]]["data"]["id"] == "usr_b0"


@pytest.mark.slow
def test_four_node_clients_publish_and_nothing_is_lost_or_duplicated(stack: Stack) -> None:
    node = need("node")
    env = {**os.environ, "SAMPLE_USER": json.dumps(sample_user())}
    clients = [
        subprocess.Popen(
            [node, str(NODE_CLIENT), stack.url, TOKEN, str(EACH), f"node{n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for n in range(CLIENTS)
    ]
    sent: list[str] = []
    for client in clients:
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err.decode()
        sent += json.loads(out)
    assert len(set(sent)) == CLIENTS * EACH
    wait_until(
        lambda: set(stack.delivered()) >= set(sent), timeout_s=60, what="every event delivered"
    )
    delivered = stack.delivered()
    assert [i for i in sent if delivered[i] != 1] == []


def test_refused_requests_from_curl_record_nothing(stack: Stack, tmp_path: Path) -> None:
    before = stack.events_recorded()
    big = tmp_path / "big.json"
    big.write_bytes(b'{"event": "reseller.user.created", "data": "' + b"x" * 10_000_000 + b'"}')
    refusals = {
        401: curl_post(stack.url, "/v1/events", one_event("usr_x"), token="wrong-" + TOKEN),
        400: curl_post(stack.url, "/v1/events", b'{"event": "reseller.user.created",'),
        422: curl_post(stack.url, "/v1/events", json.dumps({"event": "x", "data": {}}).encode()),
    }
    huge = curl(f"{stack.url}/v1/events", "-X", "POST", "--data-binary", f"@{big}")
    check_response("POST", "/v1/events", huge.status, huge.headers, huge.body)
    refusals[413] = huge  # told before the body is sent (curl waits for 100 Continue)
    for status, answer in refusals.items():
        assert answer.status == status, answer
        assert answer.headers["content-type"] == "application/problem+json"
    assert refusals[401].headers["www-authenticate"].startswith("Bearer")
    assert stack.events_recorded() == before


def test_redis_down_answers_503_then_a_retry_under_its_key_publishes_once(tmp_path: Path) -> None:
    """An API without tokens (loopback only, anyone on this machine publishes) on a Redis that
    goes away and comes back on the same port."""
    server = RedisServer(tmp_path / "redis").start()
    deployment = Deployment(tmp_path=tmp_path, redis_url=server.url)
    try:
        api, url = deployment.start_api()
        body = one_event("usr_outage")
        first = curl_post(url, "/v1/events", body, "-H", "Idempotency-Key: k1", token=None)
        assert first.status == 202
        server.stop()
        down = curl_post(url, "/v1/events", body, "-H", "Idempotency-Key: k2", token=None)
        assert down.status == 503
        assert int(down.headers["retry-after"]) >= 1
        assert server.url not in down.body.decode()
        server.start()
        second = curl_post(url, "/v1/events", body, "-H", "Idempotency-Key: k2", token=None)
        again = curl_post(url, "/v1/events", body, "-H", "Idempotency-Key: k2", token=None)
        assert second.status == again.status == 202
        assert second.json == again.json
        client = redis.Redis.from_url(server.url)
        pending = client.lrange(Keys().pending, 0, -1)
        client.close()
        assert pending == [str(first.json["id"]).encode(), str(second.json["id"]).encode()]
        assert "producer=local" in api.log()
    finally:
        deployment.kill_all()
        server.stop(kill=True)
