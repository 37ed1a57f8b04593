"""The API's commit: ``Publisher.publish_events`` step by step, with the script call on the
event loop.

The steps are the publisher's own (``commit_for``, ``check_store``, the same ``record_events``
script, ``outage``, ``settle``, ``trigger``): the arguments, the commit point, the idempotency
refusal and the translation of an outage are one code. Only the round trip differs: handing
each event to a thread that calls Redis cost the API about a fifth of its CPU (a thread switch
each way, measured), so the script goes through an asyncio Redis client on the loop, which
keeps answering while Redis is slow. What is rare or blocking stays on the pool: the store
check (one round trip a second), the dispatch trigger (Celery), and every publish of a
deployment that waits for replicas or finds its master through Sentinel (the publisher's own
``Replication`` and client).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import redis.asyncio

from reseller_webhooks.producers.connection import (
    direct_client_options,
    publish_replicas,
    redis_target,
)
from reseller_webhooks.producers.events import WebhookEvent
from reseller_webhooks.producers.publisher import RECORD_EVENTS, Publisher


class Committer:
    def __init__(self, publisher: Publisher, pool: ThreadPoolExecutor) -> None:
        self.publisher = publisher
        self.pool = pool
        target = redis_target(publisher.settings)
        self._url = target.url
        self._options = direct_client_options(target)  # those of the publisher's own client
        #: On the loop unless the publisher's own client must make the call.
        self.on_loop = target.scheme != "sentinel" and publish_replicas(publisher.settings) <= 0
        self._client: redis.asyncio.Redis | None = None
        self._script: Any = None

    async def run(self, call: Callable[[], Any]) -> Any:
        """``call`` on the pool: a slow or unreachable Redis never blocks the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    def _record(self) -> Any:
        if self._script is None:  # made on the loop that uses it
            self._client = redis.asyncio.Redis.from_url(self._url, **self._options)
            self._script = self._client.register_script(RECORD_EVENTS)
        return self._script

    async def publish_events(
        self, events: Sequence[WebhookEvent], keys: Sequence[str] | None
    ) -> list[str]:
        publisher = self.publisher
        if not self.on_loop:
            ids: list[str] = await self.run(
                lambda: publisher.publish_events(events, idempotency_keys=keys)
            )
            return ids
        commit = publisher.commit_for(events, keys)
        try:
            if publisher.store_check_due():
                await self.run(publisher.check_store)
            else:
                publisher.check_store()  # the last answer, no round trip
            result = await self._record()(keys=commit.keys, args=commit.args)
        except redis.RedisError as exc:
            raise publisher.outage(exc) from None
        ids, arm = publisher.settle(commit, result)
        if arm:
            await self.run(lambda: publisher.trigger(ids))
        return ids

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
