"""An API service's publishing, as its own process: one ``publish`` call per event, optionally
paced, each event about a user of its own. Prints ``{"sent": {event id: unix time}, ...}``.

``python -m bench.producer REDIS_URL COUNT RATE_PER_S NAME [START_AT [BODY_BYTES]]`` (RATE 0: as
fast as it can). With START_AT (Unix time) it starts up and connects first, then waits for that
moment, so that several producers' start-up (imports take a core for a second) is not measured.
BODY_BYTES pads each event (the organization's description) to about that size.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.worker.devserver.samples import sample_user


def padded_user(body_bytes: float = 0) -> dict[str, Any]:
    """The sample user, its organization's description padded so that the event's body is about
    ``body_bytes`` long (the sample's own size when smaller)."""
    user = sample_user()
    pad = int(body_bytes) - len(json.dumps(user)) - 150  # the envelope around the data
    if pad > 0:
        user["organization"] = {**user["organization"], "description": "x" * pad}
    return user


def main(
    redis_url: str,
    count: int,
    rate: float,
    name: str,
    start_at: float = 0.0,
    body_bytes: float = 0,
) -> None:
    user = padded_user(body_bytes)
    sent: dict[str, float] = {}
    with Publisher(ProducerSettings(redis_url=redis_url)) as publisher:
        publisher.ping()
        time.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()
        for i in range(count):
            if rate:
                pause = started + i / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            at = time.time()
            sent[publisher.publish("reseller.user.created", {**user, "id": f"{name}-{i}"})] = at
        seconds = time.perf_counter() - started
    print(json.dumps({"sent": sent, "seconds": seconds}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], *map(float, sys.argv[5:]))
