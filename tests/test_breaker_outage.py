"""The circuit breaker end to end: real workers, a real receiver that goes down and comes back,
the schedule scaled so minutes run in seconds."""

from __future__ import annotations

import time

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver, Reply
from tests.helpers import Deployment, Script, publish_burst, report, wait_until

#: 5 s probes are 50 ms, the 5 min longest interval 3 s; the 300 s retry 3 s, the 1800 s one 18 s.
SCALE = "0.01"


def breaker(rdb: redis.Redis, keys: Keys, sub: str = "s") -> str:
    return (rdb.hget(keys.subscriber_state(sub), "breaker") or b"closed").decode()


def ids_delivered(receiver: Receiver, path: str = "/s") -> set[str]:
    return {r.headers["webhook-id"] for r in receiver.received if r.path == path}


@pytest.mark.slow
def test_a_down_endpoint_gets_a_few_probes_and_its_backlog_at_once_when_back(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.settings["WEBHOOKS_SCHEDULE_SCALE"] = SCALE
    deployment.subscriber("s", f"{receiver.url}/s")
    script.always("/s", Reply(503))
    deployment.start_worker()
    ids = publish_burst(publisher, 300, batch=20)

    wait_until(lambda: breaker(rdb, keys) == "open", what="the breaker opened")
    at_open = len(receiver.received)
    # The outage goes on: six probes at growing intervals (0.05 s to 1.6 s: over 3 s), while
    # the deliveries attempted so far are parked on their 300 s (3 s) and 1800 s (18 s) retries.
    wait_until(lambda: len(receiver.received) >= at_open + 6, timeout_s=30, what="six probes")
    during = len(receiver.received)
    assert during <= 40, f"{during} attempts against the down endpoint"
    assert all(r.path == "/s" for r in receiver.received)

    script.always("/s", Reply(200))
    back = time.monotonic()
    wait_until(lambda: ids_delivered(receiver) >= set(ids), timeout_s=60, what="backlog delivered")
    drained_s = time.monotonic() - back
    report("breaker outage", events=300, attempts_while_down=during, drained_s=f"{drained_s:.1f}")
    # Without the breaker the backlog waits for the parked retries (18 s at this scale).
    assert drained_s < 12
    assert breaker(rdb, keys) == "closed"
    assert rdb.hget(keys.subscriber_state("s"), "failing_since") is None
