"""Failures, end to end: retries on schedule, Retry-After, dead letters, 410, timeouts, replay."""

from __future__ import annotations

import itertools
import json

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver, Reply
from reseller_webhooks.worker.devserver.samples import sample_user
from tests.helpers import Deployment, Script, attempt_log, settled, wait_until

FAST = {"schedule_s": [0, 0.2, 0.2, 0.2], "jitter": 0}


@pytest.mark.slow
def test_503_twice_then_200_is_three_attempts_under_one_id(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber(
        "s", f"{receiver.url}/s", retry={"schedule_s": [0, 1.1, 1.1], "jitter": 0}
    )
    script.then("/s", Reply(503), Reply(503))
    deployment.start_worker()
    event_id = publisher.user_created(sample_user())

    got = receiver.wait_for(3)
    wait_until(lambda: settled(rdb, keys), what="delivery finished")
    assert len(receiver.received) == 3
    assert {r.headers["webhook-id"] for r in got} == {event_id}
    stamps = [int(r.headers["webhook-timestamp"]) for r in got]
    assert stamps[0] < stamps[1] < stamps[2]  # signed afresh at every attempt
    for item in got:
        assert abs(item.at - int(item.headers["webhook-timestamp"])) < 1.5
    log = attempt_log(rdb, keys, f"{event_id}:s")
    assert [(a["attempt"], a["status"], a["outcome"]) for a in log] == [
        (1, 503, "retry"),
        (2, 503, "retry"),
        (3, 200, "delivered"),
    ]
    assert log[0]["next_due"] is not None
    assert log[2]["next_due"] is None
    assert rdb.hget(keys.delivery(f"{event_id}:s"), "state") == b"delivered"


@pytest.mark.slow
def test_retry_after_is_honoured(
    deployment: Deployment, receiver: Receiver, script: Script, publisher: Publisher
) -> None:
    deployment.subscriber("s", f"{receiver.url}/s", retry={"schedule_s": [0, 0.1], "jitter": 0})
    script.then("/s", Reply(429, headers={"Retry-After": "2"}))
    deployment.start_worker()
    publisher.user_created(sample_user())
    first, second = receiver.wait_for(2)
    assert second.at - first.at >= 1.9


@pytest.mark.slow
def test_400_is_dead_lettered_at_once_and_listed(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber("s", f"{receiver.url}/s?token=abc", retry=FAST)
    script.always("/s?token=abc", Reply(400, body=b'{"error": "schema mismatch"}'))
    deployment.start_worker()
    event_id = publisher.user_created(sample_user())
    wait_until(lambda: rdb.zcard(keys.dead) == 1, what="dead letter")
    assert len(receiver.received) == 1

    listed = deployment.cli("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    letter = json.loads(listed.stdout)
    assert letter["delivery_id"] == f"{event_id}:s"
    assert letter["reason"] == "permanent failure: HTTP 400"
    assert letter["event_type"] == "reseller.user.created"
    assert letter["url"].endswith("/s")  # the query string (tokens) is not kept
    assert "body" not in letter

    shown = json.loads(deployment.cli("dlq", "show", f"{event_id}:s").stdout)
    assert [a["status"] for a in shown["attempt_log"]] == [400]
    assert shown["attempt_log"][0]["response"] == '{"error": "schema mismatch"}'
    assert "email" not in json.dumps(shown)  # the body (personal data) only with --body
    secrets = deployment.secrets.values()
    assert not any(
        s in deployment.cli("dlq", "show", f"{event_id}:s", "--body").stdout for s in secrets
    )

    assert deployment.cli("dlq", "list", "--since", "1h").stdout.startswith(f"{event_id}:s ")
    assert deployment.cli("dlq", "list", "--since", "2100-01-01T00:00:00Z").stdout.startswith("0")
    assert deployment.cli("dlq", "list", "--since", "yesterday").returncode == 2
    assert deployment.cli("dlq", "list", "--subscriber", "other").stdout.startswith("0 dead")
    assert deployment.cli("dlq", "list", "--event", "reseller.user.updated").stdout.startswith("0")

    purged = deployment.cli("dlq", "purge", "--all", "--yes")
    assert purged.stdout.strip() == "purged 1 dead letter(s)"
    assert rdb.zcard(keys.dead) == 0
    assert rdb.exists(keys.dead_letter(f"{event_id}:s"), keys.attempts(f"{event_id}:s")) == 0


def test_410_disables_the_subscriber_until_enabled_then_replay_delivers(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber("gone", f"{receiver.url}/gone", retry=FAST)
    script.then("/gone", Reply(410))
    deployment.start_worker()
    first = publisher.user_created(sample_user())
    wait_until(lambda: rdb.zcard(keys.dead) == 1, what="first dead letter")
    assert rdb.hget(keys.subscriber_state("gone"), "disabled") == b"1"

    second = publisher.user_updated(sample_user())  # not attempted while disabled
    wait_until(lambda: rdb.zcard(keys.dead) == 2, what="second dead letter")
    assert len(receiver.received) == 1
    letter = json.loads(rdb.get(keys.dead_letter(f"{second}:gone")) or b"{}")
    assert letter["reason"].startswith("subscriber disabled: HTTP 410")

    refused = deployment.cli("dlq", "replay", "--subscriber", "gone")
    assert refused.returncode == 1
    assert "subscribers enable" in refused.stderr
    assert deployment.cli("subscribers", "enable", "gone").returncode == 0
    replay = deployment.cli("dlq", "replay", "--subscriber", "gone")
    assert replay.returncode == 0, replay.stderr
    assert "replayed 2" in replay.stdout

    got = receiver.wait_for(3)
    wait_until(lambda: settled(rdb, keys), what="replays finished")
    assert sorted(r.headers["webhook-id"] for r in got[1:]) == sorted([first, second])
    assert rdb.zcard(keys.dead) == 0
    log = attempt_log(rdb, keys, f"{first}:gone")
    assert [(a["trigger"], a["status"]) for a in log] == [("scheduled", 410), ("manual", 200)]


def test_a_hanging_subscriber_times_out_and_is_retried(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber("slow", f"{receiver.url}/slow", timeout_s=0.5, retry=FAST)
    script.then("/slow", Reply(200, delay_s=3))
    deployment.start_worker()
    event_id = publisher.user_created(sample_user())
    receiver.wait_for(2)
    wait_until(lambda: settled(rdb, keys), what="delivered on the second attempt")
    log = attempt_log(rdb, keys, f"{event_id}:slow")
    assert log[0]["status"] is None
    assert "timed out" in log[0]["error"]
    assert log[0]["duration_ms"] < 1500
    assert (log[1]["status"], log[1]["outcome"]) == (200, "delivered")


def test_exhausted_retries_are_dead_lettered_with_every_attempt(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber("down", f"{receiver.url}/down", retry=FAST)
    script.always("/down", Reply(503))
    deployment.start_worker()
    event_id = publisher.user_created(sample_user())
    wait_until(lambda: rdb.zcard(keys.dead) == 1, what="dead letter")
    letter = json.loads(rdb.get(keys.dead_letter(f"{event_id}:down")) or b"{}")
    assert letter["reason"] == "retries exhausted after 4 attempts; last: HTTP 503"
    assert letter["attempts"] == 4
    assert len(receiver.received) == 4
    assert [a["attempt"] for a in attempt_log(rdb, keys, f"{event_id}:down")] == [1, 2, 3, 4]


def test_a_subscriber_failing_everything_is_disabled_and_its_backlog_dead_lettered(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber(
        "flaky",
        f"{receiver.url}/flaky",
        retry={"schedule_s": [0] + [0.3] * 20, "jitter": 0, "disable_after_s": 1.0},
    )
    script.always("/flaky", Reply(502))
    deployment.start_worker()
    first = publisher.user_created(sample_user())
    wait_until(lambda: rdb.zcard(keys.dead) == 1, what="auto-disable")
    letter = json.loads(rdb.get(keys.dead_letter(f"{first}:flaky")) or b"{}")
    assert letter["reason"].startswith("subscriber disabled: every attempt failed for")
    status = deployment.cli("subscribers", "status")
    assert "flaky  DISABLED: subscriber disabled: every attempt failed" in status.stdout
    attempts = len(receiver.received)
    assert 3 <= attempts < 21

    publisher.user_updated(sample_user())
    wait_until(lambda: rdb.zcard(keys.dead) == 2, what="backlog dead-lettered, not dropped")
    assert len(receiver.received) == attempts


@pytest.mark.slow
def test_the_standard_24_hour_schedule_runs_in_seconds_with_a_scale(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    """The default schedule (5 s ... 24 h, about 3 days) scaled by 1/50,000: about 5.4 s."""
    scale = 0.00002
    deployment.settings["WEBHOOKS_SCHEDULE_SCALE"] = str(scale)
    deployment.subscriber("down", f"{receiver.url}/down")  # default policy
    script.always("/down", Reply(503))
    deployment.start_worker()
    event_id = publisher.user_created(sample_user())
    wait_until(lambda: rdb.zcard(keys.dead) == 1, timeout_s=30, what="schedule exhausted")

    got = receiver.received
    assert len(got) == 10
    assert {r.headers["webhook-id"] for r in got} == {event_id}
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    # The long steps dominate: each gap is its step (scaled) +-20 % jitter, plus scheduling slack.
    for gap, step_s in zip(gaps[5:], (36000, 50400, 72000, 86400), strict=True):
        assert step_s * scale * 0.8 - 0.01 <= gap <= step_s * scale * 1.2 + 0.25, (gap, step_s)
    letter = json.loads(rdb.get(keys.dead_letter(f"{event_id}:down")) or b"{}")
    assert letter["reason"] == "retries exhausted after 10 attempts; last: HTTP 503"
