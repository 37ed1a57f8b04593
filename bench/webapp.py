"""What one ``publish()`` costs a web app, called the ways docs/publishing-from-python.md shows.

``python -m bench.webapp [CALLS] [ROUNDS]``: its own Redis on loopback, no worker (a dispatch
trigger stays pending, as under load: each call is one round trip). Per round, side by side:
calls made directly (a sync view: Django, Flask), through ``asyncio.to_thread`` from an event
loop (a FastAPI handler), and from 4 threads sharing one ``Publisher`` (a threaded server).
Prints microseconds per call (wall time divided by calls), each round and the medians.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user

EVENT = "reseller.user.updated"
THREADS = 4


def _users(count: int) -> list[dict[str, Any]]:
    user = sample_user()
    return [{**user, "id": f"usr_{i}"} for i in range(count)]


def direct(publisher: Publisher, data: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for user in data:
        publisher.publish(EVENT, user)
    return time.perf_counter() - started


def to_thread(publisher: Publisher, data: list[dict[str, Any]]) -> float:
    async def handler(user: dict[str, Any]) -> str:
        return await asyncio.to_thread(publisher.publish, EVENT, user)

    async def serve() -> float:
        started = time.perf_counter()
        for user in data:
            await handler(user)
        return time.perf_counter() - started

    return asyncio.run(serve())


def threads(publisher: Publisher, data: list[dict[str, Any]]) -> float:
    with ThreadPoolExecutor(THREADS) as pool:
        started = time.perf_counter()
        list(pool.map(lambda user: publisher.publish(EVENT, user), data))
        return time.perf_counter() - started


WAYS = {"direct": direct, "asyncio.to_thread": to_thread, f"{THREADS} threads": threads}


def main(argv: list[str]) -> None:
    calls = int(argv[0]) if argv else 2000
    rounds = int(argv[1]) if len(argv) > 1 else 3
    data = _users(calls)
    per_call: dict[str, list[float]] = {name: [] for name in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            with Publisher(ProducerSettings(redis_url=server.url)) as publisher:
                publisher.publish(EVENT, data[0])  # arms the trigger: it stays pending
                for number in range(1, rounds + 1):
                    for name, way in WAYS.items():
                        per_call[name].append(way(publisher, data) / calls * 1e6)
                    print(
                        f"round {number}: "
                        + ", ".join(f"{n} {v[-1]:.0f} us" for n, v in per_call.items())
                    )
        finally:
            server.stop()
    print(f"medians of {rounds} rounds of {calls} calls (microseconds per call):")
    for name, values in per_call.items():
        print(f"  {name:20} {statistics.median(values):6.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
