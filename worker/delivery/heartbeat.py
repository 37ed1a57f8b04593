"""Keeps the slots a worker process holds alive while it is alive (see ``records.scripts``).

A slot lapses ``SLOT_TTL_S`` after its holder's last heartbeat, so a killed worker holds up its
subscribers' ready deliveries for seconds, not for the length of a delivery lease.
"""

from __future__ import annotations

import logging
import threading

import redis

from reseller_webhooks.worker.background import BackgroundThread
from reseller_webhooks.worker.delivery.deliverer import Deliverer
from reseller_webhooks.worker.ops import outage

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0


def heartbeat(deliverer: Deliverer) -> BackgroundThread:
    """The heartbeat of ``deliverer``'s slots, once a second until stopped."""

    def run(stop: threading.Event) -> None:
        failing = False
        while not stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                deliverer.heartbeat()
            except redis.RedisError as exc:
                if not failing and not outage.REDIS.refused(exc, "renewing slots"):
                    log.warning("slot heartbeat failed (%s); retrying", type(exc).__name__)
                failing = True
            else:
                failing = False

    return BackgroundThread("webhooks-heartbeat", run)
