"""What a worker holds does not grow with subscribers that are not being sent to: one TLS
context and one connection pool whatever their number, and no more open connections than
requests it can have in flight (docs/sizing.md)."""

from __future__ import annotations

import os
import ssl
from collections import Counter
from pathlib import Path
from typing import Any

import httpcore
import pytest

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.worker.config.subscribers import parse_config
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.http import transport
from reseller_webhooks.worker.http.sender import Sender
from tests.helpers import Deployment, wait_until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def config(count: int) -> Any:
    return parse_config(
        {
            "subscribers": [
                {
                    "id": f"s{i}",
                    "url": f"https://s{i}.example.com/hook",
                    "events": ["reseller.user.*"],
                    "secret": SECRET,
                }
                for i in range(count)
            ]
        }
    )


def test_a_sender_builds_as_many_tls_contexts_and_pools_for_1000_subscribers_as_for_3(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: Counter[str] = Counter()
    make_context, make_pool = ssl.create_default_context, httpcore.ConnectionPool.__init__

    def counted_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built["tls contexts"] += 1
        return make_context(*args, **kwargs)

    def counted_pool(self: Any, *args: Any, **kwargs: Any) -> None:
        built["pools"] += 1
        make_pool(self, *args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted_context)
    monkeypatch.setattr(httpcore.ConnectionPool, "__init__", counted_pool)
    transport.tls_context.cache_clear()
    few = Sender(config(3))
    for_few = Counter(built)
    many = Sender(config(1000))
    for_many = built - for_few
    assert for_few["tls contexts"] == 1  # the process's one context, built once
    assert for_many["tls contexts"] == 0
    assert for_many["pools"] == for_few["pools"]  # the same whatever the subscribers
    few.close()
    many.close()


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to ``port`` on loopback."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


@pytest.mark.slow
def test_a_worker_keeps_no_more_connections_open_than_it_has_threads(
    deployment: Deployment, publisher: Publisher, receiver: Receiver
) -> None:
    """20 subscribers each sent one event (the receiver keeps connections alive): a worker of
    2 threads holds at most 2 connections afterwards, not one per subscriber."""
    for i in range(20):
        deployment.subscriber(f"s{i}", f"{receiver.url}/s{i}")
    deployment.settings["WEBHOOKS_CONCURRENCY"] = "2"
    worker = deployment.start_worker()
    publisher.user_created(sample_user())
    wait_until(lambda: len(receiver.received) >= 20, timeout_s=60, what="20 deliveries")
    port = int(receiver.url.rsplit(":", 1)[1])
    assert connections_to(worker.process.pid, port) <= 2
