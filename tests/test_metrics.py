"""Metrics against what really happened: real workers, a real receiver, /metrics over HTTP.

The counts a worker reports are compared with the requests the receiver got (and what it
answered), with the dead letters ``dlq list`` shows, and with the delivery records themselves.
The alert rules are checked and unit-tested with promtool, and the dashboard's queries may name
only metrics a worker serves.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.config.settings import WorkerSettings
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.redis_server import free_port
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.ops.deployment_metrics import StatsReader
from reseller_webhooks.worker.records.shapes import Finish, Route
from reseller_webhooks.worker.records.store import Store
from tests.helpers import IN_CI, ROOT, Deployment, Script, settled, wait_until

OPS = ROOT / "ops"
FAST = {"schedule_s": [0, 0.2, 0.2, 0.2], "jitter": 0}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers ------------------------------------------------------------------------------------


def a_user() -> dict[str, Any]:
    """The sample user under an id of its own (per-user ordering keeps one user's events in
    line)."""
    return {**sample_user(), "id": f"usr_{secrets.token_hex(4)}"}


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(got: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 for a labelled counter or histogram child never touched."""
    return got.get((name, frozenset(labels.items())), 0.0)


def served_names(text: str) -> set[str]:
    """Every series name a scrape may carry, histograms and counters with their suffixes."""
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count"]}
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def metrics_worker(deployment: Deployment, *extra: str, **settings: str) -> int:
    """A worker serving /metrics on a free port at the default address (loopback only)."""
    port = free_port()
    deployment.settings.update(WEBHOOKS_METRICS_PORT=str(port), **settings)
    deployment.settings.pop("WEBHOOKS_METRICS_HOST", None)
    worker = deployment.start_worker(*extra)
    wait_until(lambda: _answers(port), what="/metrics answers")
    assert f"metrics on http://127.0.0.1:{port}/metrics" in worker.log()
    assert not _reachable("127.0.0.2", port)  # bound to 127.0.0.1, not to every address
    return port


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        return False
    return True


def _answers(port: int) -> bool:
    try:
        scrape_text(port)
    except OSError:
        return False
    return True


def dead_letter_ids(deployment: Deployment, subscriber: str) -> list[str]:
    listed = deployment.cli("dlq", "list", "--subscriber", subscriber, "--json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line)["delivery_id"] for line in listed.stdout.splitlines() if line]


class Answers:
    """The receiver's script, remembering what it answered to each path."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.given: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    def __call__(self, item: Received) -> Reply:
        reply = self.script(item)
        with self._lock:
            self.given[(item.path, reply.status)] += 1
        return reply

    def count(self, path: str, statuses: range | set[int]) -> int:
        with self._lock:
            return sum(
                n for (p, status), n in self.given.items() if p == path and status in statuses
            )


OK = range(200, 300)


# -- the counts against the receiver and the dead letters ----------------------------------------


@pytest.mark.slow
def test_counts_match_what_the_receiver_got_and_the_dead_letters(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    answers = Answers(script)
    receiver.respond = answers
    for sub in ("ok", "flaky", "bad", "gone"):
        deployment.subscriber(sub, f"{receiver.url}/{sub}", retry=FAST)
    script.then("/flaky", Reply(500), Reply(503))  # two retries, then 200s
    script.always("/bad", Reply(400))  # dead at once
    script.always("/gone", Reply(410))  # dead, and the subscriber disabled
    port = metrics_worker(deployment)

    events = [publisher.user_created(a_user()) for _ in range(5)]
    wait_until(lambda: settled(rdb, keys), what="every delivery finished")
    wait_until(lambda: rdb.zcard(keys.dead) == 10, what="bad's and gone's dead letters")
    text = scrape_text(port)
    got = samples(text)

    for sub in ("ok", "flaky", "bad", "gone"):
        path = f"/{sub}"
        arrived = sum(1 for r in receiver.received if r.path == path)
        delivered = value(got, "webhooks_attempts_total", subscriber=sub, outcome="delivered")
        retried = value(got, "webhooks_attempts_total", subscriber=sub, outcome="retry")
        dead = value(got, "webhooks_attempts_total", subscriber=sub, outcome="dead")
        assert delivered == answers.count(path, OK), sub
        assert retried == answers.count(path, {500, 503}), sub
        assert dead == answers.count(path, {400, 410}), sub
        assert delivered + retried + dead == arrived, sub
        assert value(got, "webhooks_attempt_duration_seconds_count", subscriber=sub) == arrived
        held = dead_letter_ids(deployment, sub)
        assert value(got, "webhooks_dead_letters", subscriber=sub) == len(held), sub
        assert value(got, "webhooks_dead_lettered_total", subscriber=sub) == len(held), sub
        assert value(got, "webhooks_backlog", subscriber=sub) == 0, sub
        assert value(got, "webhooks_oldest_pending_seconds", subscriber=sub) == 0, sub

    # What the receiver saw, in numbers: every event reached ok and flaky once with a 2xx.
    for sub in ("ok", "flaky"):
        ids = [r.headers["webhook-id"] for r in receiver.received if r.path == f"/{sub}"]
        assert sorted(set(ids)) == sorted(events)
        assert value(got, "webhooks_attempts_total", subscriber=sub, outcome="delivered") == 5
    assert value(got, "webhooks_attempts_total", subscriber="flaky", outcome="retry") == 2
    assert value(got, "webhooks_publish_to_delivery_seconds_count") == 10
    # Each retry was made ready by this worker's scheduler, once.
    assert value(got, "webhooks_retry_lateness_seconds_count") == 2
    # Five dead letters each, though gone stopped being attempted once it was disabled.
    assert len(dead_letter_ids(deployment, "bad")) == len(dead_letter_ids(deployment, "gone")) == 5
    assert value(got, "webhooks_attempts_total", subscriber="bad", outcome="dead") == 5
    assert 1 <= value(got, "webhooks_attempts_total", subscriber="gone", outcome="dead") <= 5
    assert value(got, "webhooks_subscriber_disabled", subscriber="gone") == 1
    for sub in ("ok", "flaky", "bad"):
        assert value(got, "webhooks_subscriber_disabled", subscriber=sub) == 0
    # Every attempt to bad and gone failed; flaky's last one succeeded.
    for sub in ("bad", "gone"):
        assert value(got, "webhooks_subscriber_failing_seconds", subscriber=sub) > 0
    for sub in ("ok", "flaky"):
        assert value(got, "webhooks_subscriber_failing_seconds", subscriber=sub) == 0
    assert value(got, "webhooks_redis_up") == 1
    assert value(got, "webhooks_due_retries") == 0
    assert value(got, "webhooks_scheduler_lateness_seconds") == 0
    assert value(got, "webhooks_undispatched_events") == 0
    lint_with_promtool(text)

    # Purged letters leave the gauge, not the count of letters made.
    assert deployment.cli("dlq", "purge", "--subscriber", "bad", "--yes").returncode == 0
    # Replayed ones go back to the backlog and, delivered, leave both.
    script.always("/gone", Reply(200))
    assert deployment.cli("subscribers", "enable", "gone").returncode == 0
    assert deployment.cli("dlq", "replay", "--subscriber", "gone").returncode == 0
    wait_until(lambda: answers.count("/gone", OK) == 5, what="replays delivered")
    wait_until(lambda: settled(rdb, keys), what="replays recorded")
    got = samples(scrape_text(port))
    assert value(got, "webhooks_dead_letters", subscriber="bad") == 0
    assert value(got, "webhooks_dead_lettered_total", subscriber="bad") == 5
    assert value(got, "webhooks_dead_letters", subscriber="gone") == 0
    assert value(got, "webhooks_dead_lettered_total", subscriber="gone") == 5
    assert value(got, "webhooks_backlog", subscriber="gone") == 0
    assert value(got, "webhooks_subscriber_disabled", subscriber="gone") == 0
    assert value(got, "webhooks_attempts_total", subscriber="gone", outcome="delivered") == 5
    assert value(got, "webhooks_publish_to_delivery_seconds_count") == 15


@pytest.mark.slow
def test_a_subscriber_that_is_down_shows_its_backlog_and_stalled_retries_on_every_worker(
    deployment: Deployment, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    # Nothing listens on this port: every attempt is refused and retried.
    deployment.subscriber(
        "down",
        f"http://127.0.0.1:{free_port()}/hook",
        retry={"schedule_s": [0, 1, 3600], "jitter": 0},
    )
    # No scheduler anywhere at first: due retries wait, and the metrics say so.
    first = metrics_worker(deployment, WEBHOOKS_EMBEDDED_SCHEDULER="false")
    user = a_user()
    publisher.user_created(user)
    publisher.user_updated({**user, "firstName": "Augusta"})  # waits behind the created
    publisher.user_updated({**user, "firstName": "Ada"})
    publisher.user_created(a_user())
    publisher.user_created(a_user())

    def stalled() -> Samples | None:
        got = samples(scrape_text(first))
        due = value(got, "webhooks_due_retries")
        late = value(got, "webhooks_scheduler_lateness_seconds")
        return got if due == 3 and late >= 0.5 else None

    got = wait_until(stalled, what="three retries due and not taken")
    # One head per user was attempted; the user's later events wait behind it.
    assert value(got, "webhooks_attempts_total", subscriber="down", outcome="retry") == 3
    assert value(got, "webhooks_backlog", subscriber="down") == 5
    assert value(got, "webhooks_oldest_pending_seconds", subscriber="down") >= 1.5
    assert value(got, "webhooks_subscriber_failing_seconds", subscriber="down") > 0
    assert value(got, "webhooks_dead_letters", subscriber="down") == 0

    # A second worker reads the same state from Redis.
    second = metrics_worker(deployment, WEBHOOKS_EMBEDDED_SCHEDULER="false")
    other = samples(scrape_text(second))
    for name in ("webhooks_backlog", "webhooks_dead_letters", "webhooks_subscriber_disabled"):
        assert value(other, name, subscriber="down") == value(got, name, subscriber="down")
    assert value(other, "webhooks_due_retries") == 3
    assert value(other, "webhooks_oldest_pending_seconds", subscriber="down") >= 1
    assert value(other, "webhooks_attempts_total", subscriber="down", outcome="retry") == 0

    # A scheduler sends them; they fail again and wait an hour: nothing is due any more.
    deployment.start_scheduler()

    def retried() -> Samples | None:
        a, b = samples(scrape_text(first)), samples(scrape_text(second))
        attempts = sum(
            value(s, "webhooks_attempts_total", subscriber="down", outcome="retry") for s in (a, b)
        )
        return b if attempts == 6 and value(b, "webhooks_due_retries") == 0 else None

    got = wait_until(retried, what="the second attempts recorded")
    assert value(got, "webhooks_backlog", subscriber="down") == 5
    assert value(got, "webhooks_scheduler_lateness_seconds") == 0
    assert rdb.zcard(keys.due) == 3  # still waiting, an hour from now


def test_a_taken_port_leaves_the_worker_delivering_and_says_so(
    deployment: Deployment, receiver: Receiver, publisher: Publisher
) -> None:
    deployment.subscriber("s", f"{receiver.url}/s")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        deployment.settings.update(
            WEBHOOKS_METRICS_PORT=str(port), WEBHOOKS_METRICS_HOST="127.0.0.1"
        )
        worker = deployment.start_worker()
        publisher.user_created(sample_user())
        receiver.wait_for(1)
        assert len(receiver.received) == 1
    assert f"metrics: cannot listen on 127.0.0.1:{port}" in worker.log()
    assert "WEBHOOKS_METRICS_PORT" in worker.log()


@pytest.mark.parametrize("port", ["-1", "65536", "nine"])
def test_a_bad_metrics_port_is_refused_by_name(port: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOKS_METRICS_PORT", port)
    with pytest.raises(ConfigError, match=r"^WEBHOOKS_METRICS_PORT: "):
        WorkerSettings()


# -- the Redis indexes follow the records ---------------------------------------------------------

UNFINISHED = {b"blocked", b"ready", b"running", b"waiting"}


def records(rdb: redis.Redis, keys: Keys) -> Counter[tuple[str, bytes]]:
    """(subscriber, state) of every delivery record, by scanning (what the metrics never do)."""
    out: Counter[tuple[str, bytes]] = Counter()
    for key in rdb.scan_iter(match=keys.delivery("*")):
        sub, state = rdb.hmget(key, "sub", "state")
        out[(sub.decode(), state)] += 1
    return out


def assert_indexes_match(rdb: redis.Redis, keys: Keys, reader: StatsReader) -> None:
    snap = {s.subscriber_id: s for s in reader.read(["a", "b"]).subscribers}
    held = records(rdb, keys)
    letters = Counter(
        json.loads(rdb.get(k) or b"{}")["subscriber_id"]
        for k in rdb.scan_iter(match=keys.dead_letter("*"))
    )
    for sub in ("a", "b"):
        unfinished = sum(n for (s, state), n in held.items() if s == sub and state in UNFINISHED)
        assert snap[sub].backlog == unfinished, (sub, held)
        assert snap[sub].dead_letters == letters[sub], sub


def test_the_redis_indexes_follow_every_transition(
    redis_url: str, rdb: redis.Redis, keys: Keys, publisher: Publisher
) -> None:
    """Drain, coalesce, claim, finish (delivered, retry, dead), sweep, replay, purge: after each,
    the backlog and dead-letter gauges equal what a scan of the records finds."""
    from reseller_webhooks.worker.records.deadletters import DeadLetters

    store = Store(rdb, keys, record_retention_s=60, dead_letter_retention_s=60, attempt_log_size=5)
    reader = StatsReader(store, dead_ttl_s=60)
    routes = {
        t: [Route("a", ordered=True, coalesce=True), Route("b", ordered=False, coalesce=False)]
        for t in ("reseller.user.created", "reseller.user.updated")
    }
    user = a_user()
    publisher.user_created(user)
    for name in ("Augusta", "Ada", "Byron"):
        publisher.user_updated({**user, "firstName": name})  # a: behind the created, coalesced
    publisher.user_created(a_user())
    store.drain(routes, batch=100, now_iso="2026-11-30T00:00:00Z")
    assert_indexes_match(rdb, keys, reader)
    assert {s.subscriber_id: s.backlog for s in reader.read(["a", "b"]).subscribers} == {
        "a": 3,  # the created, the newest update (two superseded), the other user's created
        "b": 5,
    }
    assert records(rdb, keys)[("a", b"superseded")] == 2

    def claim(sub: str) -> list[Any]:
        store.redis.delete(keys.slots(sub))  # ours the only slot (the sweep may arm one)
        store.redis.zadd(keys.slots(sub), {"1": 10**13})
        batch = store.claim(sub, "1", most=100, lease_ms=60_000, bound=1)
        assert batch is not None
        return batch.claims

    def finish(claims: list[Any], outcomes: list[str]) -> None:
        store.finish(
            [
                (
                    c,
                    Finish(
                        outcome,
                        attempt={"outcome": outcome},
                        delay_ms=0 if outcome == "retry" else None,
                        reason="permanent failure: HTTP 400",
                        disable_after_ms=3_600_000,
                        dead_letter={
                            "delivery_id": c.delivery_id,
                            "event_id": c.event_id,
                            "subscriber_id": c.subscriber_id,
                            "event_type": "reseller.user.created",
                            "body": c.body.decode(),
                        },
                    ),
                )
                for c, outcome in zip(claims, outcomes, strict=True)
            ]
        )
        assert_indexes_match(rdb, keys, reader)

    a = claim("a")  # the heads of a's two chains
    assert len(a) == 2
    assert all(c.published_at > 0 for c in a)
    finish(a, ["delivered", "dead"])  # the created delivered: the update is ready
    b = claim("b")
    assert len(b) == 5
    finish(b, ["retry", "dead", "delivered", "delivered", "dead"])
    store.sweep(batch=100, dispatch_lost_after_s=60)  # the retry is due at once
    assert_indexes_match(rdb, keys, reader)
    finish(claim("b"), ["dead"])
    finish(claim("a"), ["delivered"])

    dead = DeadLetters(store, event_ttl_s=60)
    replayed, _ = dead.replay([letter.delivery_id for letter in dead.find(subscriber="b")][:2])
    assert len(replayed) == 2
    assert_indexes_match(rdb, keys, reader)
    assert dead.purge([letter.delivery_id for letter in dead.find(subscriber="a")]) == 1
    assert_indexes_match(rdb, keys, reader)
    finish(claim("b"), ["delivered"])  # b failing: one delivery at a time until a success
    finish(claim("b"), ["dead"])
    snap = {s.subscriber_id: s for s in reader.read(["a", "b"]).subscribers}
    assert (snap["a"].backlog, snap["a"].dead_letters, snap["a"].dead_lettered_total) == (0, 0, 1)
    assert (snap["b"].backlog, snap["b"].dead_letters, snap["b"].dead_lettered_total) == (0, 2, 4)


def test_events_not_yet_fanned_out_are_counted(
    redis_url: str, rdb: redis.Redis, keys: Keys, publisher: Publisher
) -> None:
    store = Store(rdb, keys, record_retention_s=60, dead_letter_retention_s=60, attempt_log_size=5)
    reader = StatsReader(store, dead_ttl_s=60)
    assert reader.read([]).undispatched == 0
    publisher.publish_batch([{"event": "reseller.user.created", "data": a_user()}] * 3)
    snap = reader.read(["a"])
    assert snap.undispatched == 3
    assert snap.oldest_undispatched_s >= 0
    assert [s.subscriber_id for s in snap.subscribers] == ["a"]
    assert snap.subscribers[0].backlog == 0


# -- promtool, the alert rules and the dashboard ---------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        if IN_CI:
            pytest.fail(
                "CI=true and no promtool (Debian's prometheus package; .ci/run installs it)"
            )
        pytest.skip("no promtool on this machine (apt-get install prometheus)")
    return found


def lint_with_promtool(text: str) -> None:
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        return  # the rules tests below fail under CI without it
    checked = subprocess.run(
        [found, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_pass_promtool_and_their_unit_tests(promtool: str) -> None:
    rules = OPS / "prometheus" / "alerts.yml"
    for args in (
        ["check", "rules", str(rules)],
        ["test", "rules", str(OPS / "prometheus" / "alerts.test.yml")],
        ["check", "config", str(OPS / "prometheus" / "prometheus.yml")],
    ):
        checked = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, (
            f"promtool {' '.join(args)}:\n{checked.stdout}{checked.stderr}"
        )
    alerts = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    assert {
        "WebhooksSubscriberDisabled",
        "WebhooksBacklogGrowing",
        "WebhooksOldestPendingTooOld",
        "WebhooksDeadLettersRising",
        "WebhooksNoWorkerUp",
        "WebhooksRetriesStalled",
        "WebhooksDeliveriesUnaccounted",
        "WebhooksEventsUnaccounted",
    } <= alerts
    # Every alert is exercised by the unit tests.
    tested = yaml.safe_load((OPS / "prometheus" / "alerts.test.yml").read_text())["tests"]
    assert alerts == {t["alertname"] for test in tested for t in test["alert_rule_test"]}


def dashboard_queries() -> list[str]:
    dashboard = json.loads((OPS / "grafana" / "dashboard.json").read_text())
    assert dashboard["panels"], "no panels"
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert all(queries), "a panel without a query"
    return queries


def alert_queries() -> list[str]:
    groups = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


PROMQL_WORDS = {
    "sum", "max", "min", "by", "rate", "increase", "delta", "absent", "histogram_quantile",
    "le", "and", "job", "instance", "subscriber", "outcome",
}  # fmt: skip


def test_dashboard_and_alerts_query_only_metrics_a_worker_serves(
    deployment: Deployment, receiver: Receiver
) -> None:
    deployment.subscriber("s", f"{receiver.url}/s")
    text = scrape_text(metrics_worker(deployment))
    served = served_names(text) | {"up"}  # `up` is Prometheus's own, per target
    for query in dashboard_queries() + alert_queries():
        words = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", re.sub(r'"[^"]*"|\[[^]]*\]', "", query)))
        unknown = words - PROMQL_WORDS - served
        assert not unknown, f"{query}: {sorted(unknown)} not served"
        assert words & served, query


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana's interval variable set)."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q.replace("$__rate_interval", "5m")}
                    for i, q in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
