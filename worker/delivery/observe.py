"""What a worker process notes of each attempt: its metrics, and a log line when it failed."""

from __future__ import annotations

import logging
import time

from reseller_webhooks.worker.delivery.outcome import Decision, Outcome
from reseller_webhooks.worker.http.sender import AttemptResult
from reseller_webhooks.worker.ops import metrics
from reseller_webhooks.worker.records.shapes import Claim

log = logging.getLogger("reseller_webhooks.worker.delivery.deliverer")


def observe(claim: Claim, result: AttemptResult, decision: Decision) -> None:
    """This process's metrics of an attempt, and a log line when it failed."""
    delivered = decision.outcome is Outcome.DELIVERED
    metrics.record_attempt(
        claim.subscriber_id,
        decision.outcome.value,
        result.duration_ms / 1000,
        publish_to_delivery_s=(claim.server_ms(time.monotonic()) - claim.published_at) / 1000
        if delivered and claim.published_at
        else None,
    )
    if not delivered:
        log.warning(
            "delivery %s attempt %d to %s: %s -> %s%s",
            claim.delivery_id,
            claim.attempt,
            claim.subscriber_id,
            result.status if result.status is not None else result.error_text,
            decision.outcome.value,
            f" (retry in {decision.delay_s:.1f} s)" if decision.delay_s is not None else "",
        )
