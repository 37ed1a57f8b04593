"""rediss:// against a TLS-only redis-server on loopback, with a CA made for the test: every
connection (queue, store, scheduler) verifies the server, and a certificate that does not verify
stops a worker before it says it is ready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import Deployment, wait_until
from tests.topology import Certificates, TLSRedis, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[TLSRedis]:
    server = TLSRedis(tmp_path_factory.mktemp("tls-redis"), certs).start()
    yield server
    server.stop()


@pytest.fixture
def tls_deployment(tmp_path: Path, tls_redis: TLSRedis) -> Iterator[Deployment]:
    dep = Deployment(tmp_path=tmp_path, redis_url=tls_redis.url, settings=tls_redis.client_env())
    yield dep
    dep.kill_all()


def test_worker_and_publisher_deliver_over_verified_tls(
    tls_deployment: Deployment, tls_redis: TLSRedis, receiver: Receiver
) -> None:
    tls_deployment.subscriber("s", f"{receiver.url}/s")
    worker = tls_deployment.start_worker()
    env = tls_redis.client_env()
    settings = ProducerSettings(
        redis_url=tls_redis.url,
        redis_ca_file=env["WEBHOOKS_REDIS_CA_FILE"],
        redis_cert_file=env["WEBHOOKS_REDIS_CERT_FILE"],
        redis_key_file=env["WEBHOOKS_REDIS_KEY_FILE"],
    )
    with Publisher(settings) as publisher:
        event_id = publisher.user_created(sample_user())
    wait_until(lambda: receiver.received, what="delivery over TLS")
    assert receiver.received[0].headers["webhook-id"] == event_id
    # The queue connection is verified too: kombu never fell back to its unverified default.
    assert "insecure" not in worker.log()
    # The CLI goes through the same settings.
    listed = tls_deployment.cli("dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "0 dead letter(s)"
    tls_deployment.settings["WEBHOOKS_REDIS_CA_FILE"] = str(tls_redis.certs.other_ca)
    refused = tls_deployment.cli("publish", "reseller.user.created", "--sample")
    assert refused.returncode == 2
    assert "TLS certificate did not verify" in refused.stderr
    assert "WEBHOOKS_REDIS_CA_FILE" in refused.stderr


@pytest.mark.parametrize(
    ("case", "env"),
    [
        ("wrong CA", {"WEBHOOKS_REDIS_CA_FILE": "other_ca"}),
        ("no CA given: the system's CAs do not know the test CA", {}),
    ],
)
def test_a_certificate_that_does_not_verify_stops_the_worker_before_ready(
    tmp_path: Path,
    tls_redis: TLSRedis,
    certs: Certificates,
    receiver: Receiver,
    case: str,
    env: dict[str, str],
) -> None:
    settings = {
        "WEBHOOKS_REDIS_CERT_FILE": str(certs.client_cert),
        "WEBHOOKS_REDIS_KEY_FILE": str(certs.client_key),
        **{k: str(getattr(certs, v)) for k, v in env.items()},
    }
    dep = Deployment(tmp_path=tmp_path, redis_url=tls_redis.url, settings=settings)
    dep.subscriber("s", f"{receiver.url}/s")
    worker, errors = dep.start_failure()
    log = worker.log()
    assert worker.process.returncode != 0, case
    assert errors == [
        "error: REDIS_URL: the Redis server's TLS certificate did not verify"
        " (self-signed certificate in certificate chain);"
        " set WEBHOOKS_REDIS_CA_FILE to the CA that signs it"
    ], log
    assert " ready." not in log


def test_missing_client_certificate_is_a_clear_error(
    tmp_path: Path, tls_redis: TLSRedis, certs: Certificates
) -> None:
    dep = Deployment(
        tmp_path=tmp_path,
        redis_url=tls_redis.url,
        settings={"WEBHOOKS_REDIS_CA_FILE": str(certs.ca)},
    )
    dep.config["subscribers"] = []
    worker = dep.start_worker(wait=False)
    try:
        worker.process.wait(timeout=60)
    finally:
        worker.stop()
    assert worker.process.returncode != 0
    assert "error: REDIS_URL: the TLS handshake with Redis failed" in worker.log()
    assert " ready." not in worker.log()


def test_the_ingest_api_publishes_over_verified_tls(
    tls_deployment: Deployment, tls_redis: TLSRedis, receiver: Receiver
) -> None:
    """The ingest API's own Redis client (on its event loop) takes the same TLS settings as the
    Publisher: an event posted over HTTP is recorded over verified TLS and delivered."""
    tls_deployment.subscriber("s", f"{receiver.url}/s")
    tls_deployment.start_worker()
    token = "tls-producer-token-" + "t" * 24
    api, url = tls_deployment.start_api(WEBHOOKS_API_TOKENS=f"shop:{token}")
    answer = httpx.post(
        f"{url}/v1/events",
        json={"event": "reseller.user.created", "data": sample_user()},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["id"]
    wait_until(lambda: receiver.received, what="delivery of the API's event over TLS")
    assert receiver.received[0].headers["webhook-id"] == event_id
    assert "insecure" not in api.log()


def test_the_ingest_api_with_a_ca_that_does_not_verify_stops_before_listening(
    tls_deployment: Deployment, tls_redis: TLSRedis
) -> None:
    """A certificate that does not verify is the operator's to fix, not an outage to answer 503
    for: the API stops at start (exit 2) naming what to set, as a worker does."""
    token = "tls-producer-token-" + "u" * 24
    tls_deployment.settings["WEBHOOKS_REDIS_CA_FILE"] = str(tls_redis.certs.other_ca)
    tls_deployment.settings["WEBHOOKS_API_TOKENS"] = f"shop:{token}"
    refused = tls_deployment.cli("api", "--port", "0")
    assert refused.returncode == 2, refused.stderr
    assert "TLS certificate did not verify" in refused.stderr
    assert "WEBHOOKS_REDIS_CA_FILE" in refused.stderr
    assert "api on http://" not in refused.stdout
    assert token not in refused.stdout + refused.stderr
