"""What a deliver task works with: the ``Setup`` (subscribers, sender, fan-out routes) it
started with, and its ``Lane`` (one subscriber, the slot it holds, the bounds it claims with)."""

from __future__ import annotations

from dataclasses import dataclass

from reseller_webhooks.worker.config.subscribers import Subscriber, SubscribersConfig
from reseller_webhooks.worker.http.sender import Sender, attempt_bound_s
from reseller_webhooks.worker.operational_events import WORKER_EVENT_TYPES
from reseller_webhooks.worker.records.store import Route

#: Grace beyond an attempt's own bound before its lease may be taken over.
LEASE_MARGIN_S = 5.0

#: Attempts one deliver task makes at once, all from its own thread (``Sender.attempts``).
ATTEMPTS_PER_SLOT = 4


def slots_and_width(max_in_flight: int) -> tuple[int, int]:
    """How many slots (deliver tasks, one thread each) a subscriber may have live, across every
    worker, and how many attempts each makes at once: as few slots as can carry
    ``max_in_flight``, never more attempts in flight than it allows."""
    slots = -(-max_in_flight // ATTEMPTS_PER_SLOT)
    return slots, max_in_flight // slots


@dataclass(frozen=True, eq=False)
class Setup:
    """The subscribers a task works with, swapped whole on a reload: a task takes the current
    one when it starts and keeps it to its end, so a reload applies between deliveries. A
    replaced setup's connections close when the last task using it ends."""

    config: SubscribersConfig
    sender: Sender
    routes: dict[str, list[Route]]

    @classmethod
    def of(cls, config: SubscribersConfig, sender: Sender) -> Setup:
        routes = {
            t: [
                Route(s.id, ordered=s.ordering == "per_user", coalesce=s.coalesce)
                for s in config.matching(t)
            ]
            for t in WORKER_EVENT_TYPES
        }
        return cls(config, sender, routes)


@dataclass(frozen=True, slots=True)
class Lane:
    """One task's work on one subscriber: the setup it started with and the bounds it claims
    with, worked out once per task."""

    subscriber_id: str
    token: str
    setup: Setup
    subscriber: Subscriber | None  # None: removed from the file since the delivery was made
    #: Less than this left on a lease before an attempt: renew the leases first.
    budget_s: float
    lease_ms: int
    #: Slots the subscriber may have live at once, across every worker.
    bound: int
    #: Attempts this task makes at once (slots times this is at most ``max_in_flight``).
    width: int

    @classmethod
    def of(cls, subscriber_id: str, token: str, setup: Setup) -> Lane:
        sub = setup.config.by_id.get(subscriber_id)
        budget_s = attempt_bound_s(sub.timeout_s if sub else 0.0) + LEASE_MARGIN_S
        bound, width = slots_and_width(sub.max_in_flight if sub else 1)
        lease_ms = int(2 * budget_s * 1000)
        return cls(subscriber_id, token, setup, sub, budget_s, lease_ms, bound, width)
