"""kombu's Redis transports, with every entry popped off a queue screened before kombu reads it.

kombu parses what ``BRPOP`` (``Channel._brpop_read``) and ``RPOP`` (``Channel._get``) return
and hands it to the consumer without a guard: an entry that is not JSON, a JSON array, a body
that is not base64 or an envelope without ``properties`` raises in the worker's event loop, and
Celery stops the worker ("Unrecoverable error") with the entry already popped and lost.

Here the channel's Redis clients post-process those two replies (redis-py's per-client
response callbacks): each popped entry goes through :func:`queue.envelope.screen` first. A
message passes on untouched, so kombu records it in its ``unacked`` hash and acks-late works as
before; a stray entry is handed to the ``on_stray_message`` transport option (the worker records
it in ``dlq messages``) and the reply becomes "nothing popped". Everything else is kombu's
own, so what this worker puts in kombu's ``unacked`` hash has passed the screen; entries someone
else wrote there are checked before kombu restores them (:class:`ScreeningQoS`). Broadcasts
(Celery's remote control, by pub/sub) are parsed by kombu itself and screened just before
delivery (``_deliver_fanout_message``).

:func:`install` points the ``redis``, ``rediss`` and ``sentinel`` URL schemes at these classes
in kombu's transport table. That table, rather than Celery's ``broker_transport``, because kombu
derives the transport from the URL scheme again whenever it fails over to another URL of a
``sentinel://a;sentinel://b`` list, and gives ``rediss`` its TLS default by that name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import kombu.transport
from kombu.transport import redis as kombu_redis

from reseller_webhooks.worker.queue.envelope import Stray, screen, screen_payload, screen_unacked
from reseller_webhooks.worker.queue.kombu_fixes import RemembersConnection

log = logging.getLogger(__name__)

#: ``on_stray_message(task, reason, raw)``: record an entry that was dropped from a queue.
StrayHandler = Callable[[str, str, bytes], None]

#: The Svix rule: a task may run for the longest subscriber timeout plus this much before
#: Redis hands its message to a second worker.
VISIBILITY_MARGIN_S = 5.0


class ScreeningMixin:
    """For a kombu Redis ``Channel``: screen every entry popped from a queue (see module doc)."""

    on_stray_message: StrayHandler | None = None

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
        """Broadcasts (Celery's remote control) arrive by pub/sub, parsed by kombu already."""
        stray = screen_payload(message, self.codecs)
        if stray is None:
            return super()._deliver_fanout_message(message, exchange)  # type: ignore[misc]
        self._drop(json.dumps(message, default=repr).encode(), f"broadcast {exchange}", stray)
        return None

    def _admit(self, item: bytes | str, source: str) -> bool:
        stray = screen(item, self.codecs)
        if stray is None:
            return True
        self._drop(item, source, stray)
        return False

    def _drop(self, item: bytes | str, source: str, stray: Stray) -> None:
        """Log (size and reason, never the content) and hand the entry to ``on_stray_message``."""
        raw = item.encode("utf-8", errors="replace") if isinstance(item, str) else item
        log.error("dropped a stray entry (%d bytes) from %s: %s", len(raw), source, stray.reason)
        if self.on_stray_message is None:
            return
        try:
            self.on_stray_message(stray.task, stray.reason, raw)
        except Exception:  # a failed record must not stop the consumer either
            log.exception("could not record the stray entry from %s", source)


class ScreeningQoS(kombu_redis.QoS):
    """kombu's QoS, but an ``unacked`` entry it cannot restore is recorded and removed.

    Restoring runs when a worker starts, every so often while it runs and when it stops; kombu
    raises on an entry it cannot parse, which stops the worker, and the next one, at start.
    """

    channel: ScreeningMixin

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        with self.channel.conn_or_acquire(client) as conn:  # type: ignore[attr-defined]
            raw = conn.hget(self.unacked_key, tag)
        stray = screen_unacked(raw, self.channel.codecs) if raw else None
        if stray is None:
            super().restore_by_tag(tag, client, leftmost)  # type: ignore[no-untyped-call]
            return
        self._remove_from_indices(tag).execute()  # type: ignore[no-untyped-call]
        self.channel._drop(raw, "kombu's unacked hash", stray)


class Channel(ScreeningMixin, RemembersConnection, kombu_redis.Channel):
    QoS = ScreeningQoS
    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.Channel.from_transport_options,
        "on_stray_message",
    )


class SentinelChannel(ScreeningMixin, RemembersConnection, kombu_redis.SentinelChannel):
    QoS = ScreeningQoS
    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.SentinelChannel.from_transport_options,
        "on_stray_message",
    )


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
    """Make ``redis://``, ``rediss://`` and ``sentinel://`` URLs use the screening transports.

    Idempotent; affects connections made after the call in this process.
    """
    kombu.transport.TRANSPORT_ALIASES.update(SCHEMES)
    cache = getattr(kombu.transport, "_transport_cache", {})
    for scheme in SCHEMES:
        cache.pop(scheme, None)


def visibility_warning(visibility_timeout_s: float, longest_timeout_s: float) -> str | None:
    """Why the visibility timeout is too short for the slowest subscriber, or ``None``.

    A task still running when the visibility timeout passes has its message restored and run by
    a second worker as well, so the timeout must outlast the longest attempt plus a margin.
    """
    needed = longest_timeout_s + VISIBILITY_MARGIN_S
    if visibility_timeout_s >= needed:
        return None
    return (
        f"WEBHOOKS_VISIBILITY_TIMEOUT_S is {visibility_timeout_s:g} s, shorter than the longest "
        f"subscriber timeout_s ({longest_timeout_s:g} s) plus {VISIBILITY_MARGIN_S:g} s: a "
        f"delivery still running after {visibility_timeout_s:g} s is handed to a second worker; "
        f"set it to at least {needed:g}"
    )
