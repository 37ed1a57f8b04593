"""The worker's lifecycle (queue.lifecycle): what it starts it stops, in reverse order, and a
worker stopped with SIGTERM exits 0 holding no thread and no socket; Celery's remote control
can describe a running worker."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.worker.background import BackgroundThread
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.redis_server import free_port
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.queue.leftovers import describe, parse_proc_net_tcp
from reseller_webhooks.worker.queue.lifecycle import stop_all
from tests.helpers import Deployment

CLEAN = "worker stopped; left behind: no thread, no socket"


def test_parts_stop_in_reverse_order_and_one_that_does_not_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ended: list[str] = []
    release = threading.Event()

    def part(name: str) -> BackgroundThread:
        def run(stop: threading.Event) -> None:
            stop.wait()
            ended.append(name)

        return BackgroundThread(name, run)

    stubborn = BackgroundThread("stubborn", lambda _stop: release.wait(30))
    running = [part("first"), stubborn, part("second"), part("third")]
    for p in running:
        p.start()
    try:
        assert stop_all(running, timeout_s=0.2) == ["stubborn"]
    finally:
        release.set()
    assert ended == ["third", "second", "first"]
    assert running == []
    assert "stubborn did not stop within 0.2 s" in caplog.text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "   0: 0100007F:D431 0100007F:18EB 01 00000000:00000000 00:00000000 00000000"
            "     0        0 4242 1 0000000000000000 20 4 30 10 -1",
            {4242: "tcp to 127.0.0.1:6379"},
        ),
        (
            "   1: 00000000:24FC 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
            "     0        0 77 1 0000000000000000 100 0 0 10 0",
            {77: "tcp listening on 0.0.0.0:9468"},
        ),
        (
            "   2: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D6D8"
            " 01 00000000:00000000 00:00000000 00000000  1000        0 9 1 0 20 4 30 10 -1",
            {9: "tcp to [::1]:55000"},
        ),
    ],
)
def test_proc_net_tcp_lines(line: str, expected: dict[int, str]) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt ...\n"
    assert parse_proc_net_tcp(header + line) == expected


@pytest.mark.parametrize(
    ("threads", "sockets", "line"),
    [
        ([], [], "no thread, no socket"),
        (["webhooks-heartbeat"], ["tcp to 127.0.0.1:6379"], "threads webhooks-heartbeat, sockets"),
        ([], None, "no thread, sockets unknown"),
    ],
)
def test_describe(threads: list[str], sockets: list[str] | None, line: str) -> None:
    assert describe(threads, sockets).startswith(line)


def test_a_worker_stopped_with_sigterm_leaves_no_thread_and_no_socket(
    deployment: Deployment, receiver: Receiver, publisher: Publisher
) -> None:
    deployment.subscriber("s", f"{receiver.url}/s")
    metrics_port = free_port()
    deployment.settings["WEBHOOKS_METRICS_PORT"] = str(metrics_port)
    deployment.settings["WEBHOOKS_METRICS_HOST"] = "127.0.0.1"
    worker = deployment.start_worker()
    event_id = publisher.user_created(sample_user())
    [received] = receiver.wait_for(1)
    assert received.headers["webhook-id"] == event_id
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert b"webhooks_attempts_total" in response.read()

    worker.stop()  # SIGTERM: warm shutdown

    assert worker.process.returncode == 0
    log = worker.log()
    assert CLEAN in log, log[-3000:]
    assert "did not stop" not in log


@pytest.mark.slow
def test_celery_inspect_stats_gets_a_reply(deployment: Deployment) -> None:
    """The worker's Celery configuration holds plain data, so its stats serialise (Flower's
    worker page asks for them)."""
    deployment.subscriber("s", "http://127.0.0.1:9/hook")
    worker = deployment.start_worker()
    run = deployment.inspect("stats", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    replies = json.loads(run.stdout)
    [stats] = [reply for reply in replies.values() if "pool" in reply]
    assert stats["pool"]["max-concurrency"] == 8
    assert f"webhooks-{worker.process.pid}@" in next(iter(replies))
