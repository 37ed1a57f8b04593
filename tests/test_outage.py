"""A Redis outage longer than every retry budget short of "for ever": the worker waits it out,
its embedded scheduler recovers, and its consumer keeps consuming afterwards (the failure mode
of celery#10205 is a worker that stays up but takes no message after a reconnect)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import IN_CI, Deployment, assert_audit_balances, settled, wait_until

pytestmark = pytest.mark.slow

#: Longer than the scheduler's retry of one tick (5 s) and than several of kombu's reconnect
#: steps (2, 4, 6 s); the worker is told to retry without a limit, so no budget runs out.
OUTAGE_S = 14.0


@pytest.mark.timeout(240)
def test_worker_and_scheduler_outlive_a_long_redis_outage(
    tmp_path: Path, receiver: Receiver
) -> None:
    try:
        server = RedisServer(tmp_path / "redis").start()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"CI=true and no redis-server could be started: {exc}")
        pytest.skip(f"no redis-server: {exc}")
    first_attempts: set[str] = set()

    def fail_first(item: Received) -> Reply:
        webhook_id = item.headers["webhook-id"]
        if webhook_id in first_attempts:
            return Reply(200)
        first_attempts.add(webhook_id)
        return Reply(503)

    receiver.respond = fail_first
    dep = Deployment(tmp_path=tmp_path, redis_url=server.url)
    dep.subscriber("s", f"{receiver.url}/s", retry={"schedule_s": [0, 2], "jitter": 0})
    settings = ProducerSettings(redis_url=server.url, visibility_timeout_s=3)
    try:
        worker = dep.start_worker()
        with Publisher(settings) as publisher:
            before = publisher.user_created(sample_user())
        wait_until(lambda: before in first_attempts, what="the first attempt (answered 503)")

        server.stop()  # the retry falls due while Redis is away
        down_at = time.monotonic()
        wait_until(
            lambda: "lost the connection to Redis; reconnecting with no limit" in worker.log(),
            what="the worker saying it keeps trying",
        )
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        assert worker.process.poll() is None, worker.log()[-3000:]
        log = worker.log()
        assert "/None)" in log  # kombu's "Trying again in N seconds... (k/None)": no limit
        server.start()
        restarted = time.monotonic()

        delivered = [r for r in receiver.received if r.headers["webhook-id"] == before]
        wait_until(
            lambda: sum(r.headers["webhook-id"] == before for r in receiver.received) == 2,
            timeout_s=60,
            what="the retry due during the outage sent by the recovered scheduler",
        )
        retry_s = time.monotonic() - restarted
        # The consumer consumes again, and keeps doing so: two fresh events, some time apart.
        fresh = []
        with Publisher(settings) as publisher:
            for _ in range(2):
                event_id = publisher.user_updated(sample_user())
                fresh.append(event_id)
                wait_until(
                    lambda event_id=event_id: any(
                        r.headers["webhook-id"] == event_id for r in receiver.received
                    ),
                    timeout_s=60,
                    what="a fresh event delivered after the outage",
                )
                time.sleep(1.0)  # spaced out on purpose: consuming must continue, not just resume
        print(
            f"\n[redis-outage] outage_s={round(restarted - down_at, 1)}, "
            f"retry_after_restart_s={round(retry_s, 1)}, first_attempts_before={len(delivered)}, "
            f"fresh_delivered={len(fresh)}, worker_alive={worker.process.poll() is None}"
        )
        assert worker.process.poll() is None
        client = redis.Redis.from_url(server.url)
        wait_until(lambda: settled(client, Keys("rw")), what="nothing left pending")
        assert_audit_balances(client, Keys("rw"))
        client.close()
    finally:
        dep.kill_all()
        server.stop(kill=True)
