"""What producers and workers agree on besides the payload: task names, queue names, Redis keys.

Producers enqueue by task name and never import worker code; this module is the whole contract.
"""

from __future__ import annotations

from dataclasses import dataclass

DISPATCH_TASK = "webhooks.dispatch"
DELIVER_TASK = "webhooks.deliver"


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
        """HASH: ``type``, ``body`` (the exact bytes sent), ``published_at`` (ms)."""
        return f"{self.prefix}:event:{event_id}"

    @property
    def dispatch(self) -> str:
        """ZSET of event ids not yet fanned out, scored by when their trigger counts as lost."""
        return f"{self.prefix}:dispatch"

    def delivery(self, delivery_id: str) -> str:
        """HASH: the durable record of one event to one subscriber (see worker.store)."""
        return f"{self.prefix}:delivery:{delivery_id}"

    @property
    def due(self) -> str:
        """ZSET of unfinished delivery ids, scored by their next action time (ms)."""
        return f"{self.prefix}:due"

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

    def subscriber_state(self, subscriber_id: str) -> str:
        """HASH: runtime state of a subscriber (disabled, reason, failing_since)."""
        return f"{self.prefix}:subscriber:{subscriber_id}"

    def cpu_claim(self, machine: str, cpu: int) -> str:
        """STRING (a lock with a TTL): the worker process pinned to this core of this machine."""
        return f"{self.prefix}:cpu:{machine}:{cpu}"

    @property
    def bad_messages(self) -> str:
        """LIST of JSON records of queue messages that were not valid triggers (newest first)."""
        return f"{self.prefix}:bad-messages"
