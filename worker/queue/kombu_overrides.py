"""Every kombu internal this project overrides, in one place, each with the reason it exists.

kombu is bounded in pyproject.toml because of this module: each override below names the
private method it replaces. When kombu moves, this is the file to read again.

1. ``ScreeningMixin._create_client`` (on kombu's Redis ``Channel`` and ``SentinelChannel``):
   kombu parses what ``BRPOP`` (``Channel._brpop_read``) and ``RPOP`` (``Channel._get``) return
   and hands it on without a guard, so an entry that is not JSON, a JSON array, a body that is not
   base64 or an envelope without ``properties`` raises in the worker's event loop; Celery stops
   the worker ("Unrecoverable error") with the entry already popped and lost (the behaviour of
   celery/celery#1113, #935 and #967; kombu#2421 is the same for SQS, still open). Here the
   channel's Redis clients post-process those two replies (redis-py's per-client response
   callbacks): each popped entry goes through :func:`queue.envelope.screen` first. A message
   passes untouched, so kombu records it in its ``unacked`` hash and acks-late works as before;
   a stray entry is handed to the handler set with :func:`on_stray_message` and the reply
   becomes "nothing popped".
2. ``ScreeningMixin._deliver_fanout_message``: broadcasts (Celery's remote control, by pub/sub)
   are parsed by kombu itself; the parsed payload is screened just before delivery.
3. ``ScreeningQoS.restore_by_tag`` (kombu's Redis ``QoS``): restoring the ``unacked`` hash runs
   when a worker starts, every so often while it runs and when it stops; kombu raises on an
   entry it cannot parse (celery/celery#940), which stops the worker, and the next one, at
   start. An entry that does not pass the screen is recorded and removed instead.
4. ``RemembersConnection._connparams``: when Celery throws a lost broker connection away, kombu
   detaches the transport from it (``transport.client = None``) while channels still have work;
   a task that finishes after the reconnect acknowledges through its old channel, which rebuilds
   its pool from ``transport.client`` and raises ``AttributeError: 'NoneType' object has no
   attribute 'client'`` in ``_connparams``, and Celery stops the worker. It happened on most
   master failovers in ``tests/test_sentinel.py``; no upstream issue tracks it. A channel here
   remembers the connection it was opened for, so the late acknowledgement reaches the current
   master instead.
5. ``ScreeningQoS.restore_visible``, ``ScreeningQoS.append``, ``ScreeningQoS.ack``,
   ``Channel._size``, ``Channel._queue_bind`` and ``Channel.maybe_refresh_binding_expiry``:
   Redis refuses writes when it is full (``maxmemory`` with ``noeviction``), read-only or
   unable to persist, and when full it refuses every command queued in a transaction, reads
   included. kombu takes a lock with ``SET`` before it restores the ``unacked`` hash (when the
   consumer starts and every few seconds after), records each message it pops in that hash
   (``ZADD``, ``HSET``), counts a queue with ``LLEN`` in a transaction when Celery declares its
   queues at start, declares their bindings (``SADD``) and acks in a transaction; a refusal in
   any of these is neither a connection error nor a channel error to Celery, so it stops the
   worker ("Unrecoverable error: server:OutOfMemoryError"), at start and while consuming. No
   upstream issue tracks it. Here a refused restore is left to the next one; a popped message
   whose ``unacked`` record was refused is still handed to its task (the entry is already off
   the queue: the task does its work or meets the refusal itself, and the scheduler takes up
   what it left, a message being only a trigger); the count and the ack are done again outside
   a transaction (reads and deletes are allowed); a refused binding is left out (consuming
   reads the queue itself, never the binding, and whoever sends to a queue declares it first,
   kombu's ``maybe_declare``); a refused refresh of an expiring queue's binding (a script every
   second) waits for the next second instead of logging a traceback each time. Every refusal
   is reported to :data:`ops.outage.REDIS` (one log line per outage, a metric).
6. :func:`install` points the ``redis``, ``rediss`` and ``sentinel`` URL schemes at these
   classes in kombu's transport table (``kombu.transport.TRANSPORT_ALIASES``). That table rather
   than Celery's ``broker_transport``, because kombu derives the transport from the URL scheme
   again whenever it fails over to another URL of a ``sentinel://a;sentinel://b`` list, and
   gives ``rediss`` its TLS default by that name.

The judgement of what is a message is ours and lives apart, in ``queue.envelope``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import kombu.transport
import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from reseller_webhooks.worker.ops import outage
from reseller_webhooks.worker.queue.envelope import Stray, screen, screen_payload, screen_unacked

log = logging.getLogger(__name__)

#: ``handler(task, reason, raw)``: record an entry that was dropped from a queue.
StrayHandler = Callable[[str, str, bytes], None]

_stray_handler: StrayHandler | None = None


def on_stray_message(handler: StrayHandler | None) -> None:
    """Where this process's screening channels hand the entries they drop (None: logged only).

    A process-wide registration rather than a transport option, so that Celery's configuration
    holds plain data (``celery inspect stats`` serialises it)."""
    global _stray_handler
    _stray_handler = handler


class ScreeningMixin:
    """For a kombu Redis ``Channel``: screen every entry popped from a queue (overrides 1, 2)."""

    # Provided by kombu's Channel.
    codecs: dict[str, Any]
    sep: str

    def _create_client(self, asynchronous: bool = False) -> Any:
        client = super()._create_client(asynchronous)  # type: ignore[misc]
        callbacks = client.response_callbacks
        after_brpop = callbacks.get("BRPOP")
        after_rpop = callbacks.get("RPOP")

        def on_brpop(response: Any, **options: Any) -> Any:
            reply = after_brpop(response, **options) if after_brpop else response
            if reply:
                key, item = reply
                name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
                queue = name.rsplit(self.sep, 1)[0]  # without a priority suffix
                if not self._admit(item, f"queue {queue}"):
                    return None  # kombu: nothing popped, poll again
            return reply

        def on_rpop(response: Any, **options: Any) -> Any:
            item = after_rpop(response, **options) if after_rpop else response
            if isinstance(item, (bytes, str)) and item and not self._admit(item, "a queue"):
                return None
            return item

        client.set_response_callback("BRPOP", on_brpop)
        client.set_response_callback("RPOP", on_rpop)
        return client

    def _deliver_fanout_message(self, message: Any, exchange: str) -> Any:
        stray = screen_payload(message, self.codecs)
        if stray is None:
            return super()._deliver_fanout_message(message, exchange)  # type: ignore[misc]
        self._drop(json.dumps(message, default=repr).encode(), f"broadcast {exchange}", stray)
        return None

    def _size(self, queue: str) -> int:
        try:
            return int(super()._size(queue))  # type: ignore[misc]
        except redis.ResponseError as exc:
            if not outage.REDIS.refused(exc, "counting a queue"):
                raise
        with self.conn_or_acquire() as client:  # type: ignore[attr-defined]
            pipe = client.pipeline(transaction=False)
            for priority in self.priority_steps:  # type: ignore[attr-defined]
                pipe.llen(self._q_for_pri(queue, priority))  # type: ignore[attr-defined]
            return sum(size for size in pipe.execute() if isinstance(size, int))

    def maybe_refresh_binding_expiry(self) -> None:
        try:
            super().maybe_refresh_binding_expiry()  # type: ignore[misc]
        except redis.ResponseError as exc:
            if not outage.REDIS.refused(exc, "refreshing queue bindings"):
                raise

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        try:
            super()._queue_bind(exchange, routing_key, pattern, queue)  # type: ignore[misc]
        except redis.ResponseError as exc:
            if not outage.REDIS.refused(exc, "declaring a queue"):
                raise

    def _admit(self, item: bytes | str, source: str) -> bool:
        stray = screen(item, self.codecs)
        if stray is None:
            return True
        self._drop(item, source, stray)
        return False

    def _drop(self, item: bytes | str, source: str, stray: Stray) -> None:
        """Log (size and reason, never the content) and hand the entry to the stray handler."""
        raw = item.encode("utf-8", errors="replace") if isinstance(item, str) else item
        log.error("dropped a stray entry (%d bytes) from %s: %s", len(raw), source, stray.reason)
        handler = _stray_handler
        if handler is None:
            return
        try:
            handler(stray.task, stray.reason, raw)
        except Exception:  # a failed record must not stop the consumer either
            log.exception("could not record the stray entry from %s", source)


class ScreeningQoS(kombu_redis.QoS):
    """kombu's QoS, but an ``unacked`` entry it cannot restore is recorded and removed (3), and
    a Redis that refuses writes is an outage, not the end of the worker (5)."""

    channel: ScreeningMixin

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().restore_visible(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.ResponseError as exc:
            if not outage.REDIS.refused(exc, "restoring unacknowledged messages"):
                raise

    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except redis.ResponseError as exc:
            if not outage.REDIS.refused(exc, "acknowledging a message"):
                raise
            with self.channel.conn_or_acquire() as client:  # type: ignore[attr-defined]
                client.pipeline(transaction=False).hdel(self.unacked_key, delivery_tag).zrem(
                    self.unacked_index_key, delivery_tag
                ).execute()
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

    def append(self, message: Any, delivery_tag: Any) -> None:
        try:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
        except redis.ResponseError as exc:
            if not outage.REDIS.refused(exc, "receiving a message"):
                raise
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        with self.channel.conn_or_acquire(client) as conn:  # type: ignore[attr-defined]
            raw = conn.hget(self.unacked_key, tag)
        stray = screen_unacked(raw, self.channel.codecs) if raw else None
        if stray is None:
            super().restore_by_tag(tag, client, leftmost)  # type: ignore[no-untyped-call]
            return
        self._remove_from_indices(tag).execute()  # type: ignore[no-untyped-call]
        self.channel._drop(raw, "kombu's unacked hash", stray)


class RemembersConnection:
    """A channel that keeps the connection settings it was opened with (override 4)."""

    connection: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._opened_for = args[0].client if args else None
        super().__init__(*args, **kwargs)

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None and self._opened_for is not None:
            self.connection.client = self._opened_for  # this transport is being discarded
        return super()._connparams(asynchronous)  # type: ignore[misc]


class Channel(ScreeningMixin, RemembersConnection, kombu_redis.Channel):
    QoS = ScreeningQoS


class SentinelChannel(ScreeningMixin, RemembersConnection, kombu_redis.SentinelChannel):
    QoS = ScreeningQoS


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


SCHEMES = {
    "redis": f"{__name__}:Transport",
    "rediss": f"{__name__}:Transport",
    "sentinel": f"{__name__}:SentinelTransport",
}


def install() -> None:
    """Make ``redis://``, ``rediss://`` and ``sentinel://`` URLs use the screening transports
    (override 6). Idempotent; affects connections made after the call in this process."""
    kombu.transport.TRANSPORT_ALIASES.update(SCHEMES)
    cache = getattr(kombu.transport, "_transport_cache", {})
    for scheme in SCHEMES:
        cache.pop(scheme, None)
