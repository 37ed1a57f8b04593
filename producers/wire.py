"""What producers and workers agree on besides the payload: task names, queue names, Redis keys.

Producers enqueue by task name and never import worker code; this module is the whole contract.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DISPATCH_TASK = "webhooks.dispatch"
DELIVER_TASK = "webhooks.deliver"
#: What a producer in another language sends through Celery's protocol to publish one event:
#: kwargs ``event``, ``data`` and optionally ``idempotency_key`` (docs/publishing.md).
PUBLISH_TASK = "webhooks.publish"


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis key and queue names, all under one prefix so deployments can share a Redis."""

    prefix: str = "rw"

    @property
    def queue(self) -> str:
        """Celery queue for fan-out and first attempts."""
        return f"{self.prefix}.deliveries"

    @property
    def retry_queue(self) -> str:
        """Celery queue for retries and re-triggers, so they never starve first attempts."""
        return f"{self.prefix}.retries"

    def event(self, event_id: str) -> str:
        """HASH: ``type``, ``body`` (the exact bytes sent), ``published_at`` (ms), ``user``,
        ``seq`` (its number in :meth:`sequence`; absent on events recorded before),
        ``traceparent`` (the publisher's W3C trace context; only when a span was active)."""
        return f"{self.prefix}:event:{event_id}"

    def sequence(self, user_id: str) -> str:
        """STRING counter: the last number given to an event about ``user_id`` (the
        ``webhook-sequence`` header). Never expires: a number is never given twice. Named by
        the SHA-1 of the user id (``redis.sha1hex`` in the publish script), so that a user's
        erasure leaves no key naming them while their numbering goes on."""
        digest = hashlib.sha1(user_id.encode(), usedforsecurity=False).hexdigest()
        return f"{self.prefix}:seq:{digest}"

    @property
    def pending(self) -> str:
        """LIST of event ids not yet fanned out, in publish order (drained by dispatch tasks)."""
        return f"{self.prefix}:pending"

    @property
    def dispatch_armed(self) -> str:
        """STRING: server time (ms) a dispatch trigger was last sent or taken; absent when none
        is pending. Publishing sends a trigger only when it sets this key."""
        return f"{self.prefix}:dispatch-armed"

    @property
    def dispatch_waiting(self) -> str:
        """STRING, short-lived: set while a lingering dispatch task waits for events (in the step
        that saw the pending list empty). A publish that deletes it publishes ``dispatch`` on
        :attr:`wake`."""
        return f"{self.prefix}:dispatch-waiting"

    def slot_waiting(self, subscriber_id: str) -> str:
        """LIST, short-lived: tokens of the subscriber's lingering slots that wait for ready
        deliveries, the latest first. A script that makes some ready pops one and publishes
        ``slot:{id}:{token}`` on :attr:`wake`."""
        return f"{self.prefix}:slot-waiting:{subscriber_id}"

    @property
    def wake(self) -> str:
        """Pub/sub channel of wake-ups for lingering triggers: ``dispatch`` or
        ``slot:{subscriber id}:{token}`` (reseller_webhooks.worker.delivery.wake)."""
        return f"{self.prefix}:wake"

    def idempotency(self, key: str) -> str:
        """STRING: the event id published under a producer's idempotency key (expires)."""
        return f"{self.prefix}:idem:{key}"

    def delivery(self, delivery_id: str) -> str:
        """HASH: the durable record of one event to one subscriber (see worker.records.store)."""
        return f"{self.prefix}:delivery:{delivery_id}"

    @property
    def due(self) -> str:
        """ZSET of waiting (score: next due time) and running (score: lease end) deliveries, ms."""
        return f"{self.prefix}:due"

    def ready(self, subscriber_id: str) -> str:
        """LIST of a subscriber's delivery ids ready to be attempted now, oldest first."""
        return f"{self.prefix}:ready:{subscriber_id}"

    def slots(self, subscriber_id: str) -> str:
        """ZSET of a subscriber's armed deliver triggers (token -> expiry ms): one per task
        that may be attempting its deliveries; their number bounds its attempts in flight."""
        return f"{self.prefix}:slots:{subscriber_id}"

    @property
    def active_subscribers(self) -> str:
        """SET of subscriber ids that have had deliveries: what the scheduler checks for ready
        work left without a trigger (``{prefix}:slot-seq`` numbers the triggers)."""
        return f"{self.prefix}:active-subscribers"

    def chain(self, subscriber_id: str, user_id: str) -> str:
        """LIST of one user's unfinished deliveries to one subscriber, in publish order; only
        the head is ever ready, running or waiting (per-user ordering)."""
        return f"{self.prefix}:chain:{subscriber_id}:{user_id}"

    def attempts(self, delivery_id: str) -> str:
        """LIST of JSON attempt records of one delivery, newest last, capped."""
        return f"{self.prefix}:attempts:{delivery_id}"

    @property
    def dead(self) -> str:
        """ZSET of dead-lettered delivery ids, scored by when they died (ms)."""
        return f"{self.prefix}:dead"

    def dead_letter(self, delivery_id: str) -> str:
        """STRING: the JSON dead letter of one delivery."""
        return f"{self.prefix}:dead:{delivery_id}"

    def open_deliveries(self, subscriber_id: str) -> str:
        """ZSET of a subscriber's unfinished deliveries (blocked, ready, running, waiting),
        scored by their event's publish time (ms): its size is the backlog, its head the oldest."""
        return f"{self.prefix}:open:{subscriber_id}"

    def dead_of(self, subscriber_id: str) -> str:
        """ZSET of a subscriber's dead-lettered delivery ids, scored by when they died (ms)."""
        return f"{self.prefix}:dead-of:{subscriber_id}"

    @property
    def dead_lettered(self) -> str:
        """HASH: subscriber id -> deliveries dead-lettered ever (a counter for alerting)."""
        return f"{self.prefix}:stats:dead-lettered"

    def rate_minute(self, subscriber_id: str, minute: int) -> str:
        """HASH ``ok``/``failed``: a subscriber's attempts recorded in one minute of server time
        (``ms // 60000``), for the success rate over the last hour; expires after an hour."""
        return f"{self.prefix}:rate:{subscriber_id}:{minute}"

    def recent_attempts(self, subscriber_id: str) -> str:
        """LIST of the delivery ids of a subscriber's latest recorded attempts, newest first
        (one entry per attempt; between ``RECENT_KEPT`` and twice that many are kept)."""
        return f"{self.prefix}:recent:{subscriber_id}"

    def user_events(self, user_id: str) -> str:
        """LIST of the ids of a user's latest fanned-out events, newest first (between
        ``USER_EVENTS_KEPT`` and twice that many; expires with the delivery records)."""
        return f"{self.prefix}:user-events:{user_id}"

    def console_session(self, digest: str) -> str:
        """STRING: the operator of a console session, under the SHA-256 of its id; expires when
        the login does, deleted at logout."""
        return f"{self.prefix}:console-session:{digest}"

    def console_job(self, job_id: str) -> str:
        """HASH: a long console action (replay or purge of many dead letters) and its progress,
        so that every console process can show it; kept a day."""
        return f"{self.prefix}:console-job:{job_id}"

    def console_throttle(self, kind: str, digest: str) -> str:
        """HASH: failed console logins or tokens of one client address or user name (``kind``
        ``addr`` or ``user``; a digest of the value): how many, and locked until when."""
        return f"{self.prefix}:console-throttle:{kind}:{digest}"

    def subscriber_state(self, subscriber_id: str) -> str:
        """HASH: runtime state of a subscriber (disabled, reason, failing_since)."""
        return f"{self.prefix}:subscriber:{subscriber_id}"

    @property
    def write_probe(self) -> str:
        """Never created: ``SET ... XX`` on it asks Redis whether it accepts writes again after
        refusing them (``worker.ops.outage``), without writing anything."""
        return f"{self.prefix}:write-probe"

    @property
    def subscribers_reload(self) -> str:
        """STRING: a counter ``reseller-webhooks subscribers reload`` increments once it has
        checked the subscribers file; workers seeing it change read the file at once."""
        return f"{self.prefix}:subscribers-reload"

    @property
    def subscribers_removal_allowed(self) -> str:
        """STRING: the SHA-256 of a subscribers file text an operator confirmed with
        ``subscribers reload --allow-removal`` (workers take it although it removes work);
        expires after a day."""
        return f"{self.prefix}:subscribers-removal-allowed"

    @property
    def bad_messages(self) -> str:
        """LIST of JSON records of queue messages that were not valid triggers (newest first)."""
        return f"{self.prefix}:bad-messages"

    def tally(self, subscriber_id: str) -> str:
        """HASH: the audit's counts for one subscriber (``fanned_out``, ``delivered``, ``dead``,
        ``superseded``, ``removed``, ``erased``), kept by the transitions; never expires."""
        return f"{self.prefix}:tally:{subscriber_id}"

    @property
    def global_tally(self) -> str:
        """HASH: the audit's deployment-wide counts (``published``, ``drained``, ``unmatched``),
        kept by the publish and the transitions; never expires."""
        return f"{self.prefix}:tally"

    @property
    def store_identity(self) -> str:
        """HASH ``id`` (written once), ``created_ms``: which store this is, so a process can
        tell that Redis came back empty or as another one."""
        return f"{self.prefix}:store"
