"""What a deliver task works with: the ``Setup`` (subscribers, sender, fan-out routes) it
started with, and its ``Lane`` (one subscriber, the slot it holds, the bounds it claims with)."""

from __future__ import annotations

from dataclasses import dataclass

from reseller_webhooks.worker.config.subscribers import Subscriber, SubscribersConfig
from reseller_webhooks.worker.http.sender import Sender, attempt_bound_s
from reseller_webhooks.worker.operational_events import WORKER_EVENT_TYPES
from reseller_webhooks.worker.records.shapes import Route

#: Grace beyond an attempt's own bound before its lease may be taken over.
LEASE_MARGIN_S = 5.0


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
    #: Attempts in flight to the subscriber at once, across every worker.
    bound: int

    @classmethod
    def of(cls, subscriber_id: str, token: str, setup: Setup) -> Lane:
        sub = setup.config.by_id.get(subscriber_id)
        budget_s = attempt_bound_s(sub.timeout_s if sub else 0.0) + LEASE_MARGIN_S
        bound = sub.max_in_flight if sub else 1
        return cls(subscriber_id, token, setup, sub, budget_s, int(2 * budget_s * 1000), bound)
