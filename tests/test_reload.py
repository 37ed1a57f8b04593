"""The subscribers file reloaded while workers run: picked up within seconds, applied between
deliveries, a removed subscriber's work dead-lettered, a broken file refused."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.config.reload import Change, Watcher, compare
from reseller_webhooks.worker.config.removal import assess, digest
from reseller_webhooks.worker.config.subscribers import (
    SubscribersConfig,
    load_config,
    parse_config,
    parse_yaml,
)
from reseller_webhooks.worker.delivery.deliverer import REMOVED_REASON
from reseller_webhooks.worker.devserver.receiver import Receiver, Reply
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.records.shapes import Route
from reseller_webhooks.worker.records.store import Store
from tests.helpers import ROOT, Deployment, Script, new_secret, wait_until

SECRET = new_secret()


def sub(sub_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": sub_id,
        "url": f"https://{sub_id}.example.com/hook",
        "events": ["reseller.user.*"],
        "secret": SECRET,
        **extra,
    }


def config(*subs: dict[str, Any]) -> SubscribersConfig:
    return parse_config({"subscribers": list(subs)})


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ([sub("a")], [sub("a")], Change((), (), ())),
        ([sub("a")], [sub("a"), sub("b")], Change(("b",), (), ())),
        ([sub("a"), sub("b")], [sub("b")], Change((), ("a",), ())),
        ([sub("a")], [sub("a", timeout_s=3)], Change((), (), ("a",))),
        ([sub("a"), sub("c")], [sub("c", enabled=False), sub("b")], Change(("b",), ("a",), ("c",))),
    ],
)
def test_compare_names_what_a_new_file_changes(
    old: list[dict[str, Any]], new: list[dict[str, Any]], expected: Change
) -> None:
    assert compare(config(*old), config(*new)) == expected


def write(path: Path, *subs: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump({"subscribers": list(subs)}))


def test_the_watcher_applies_a_valid_change_once_and_refuses_a_broken_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "subscribers.yaml"
    write(path, sub("a"))
    running = [load_config(path)]
    signal = [b"0"]

    def apply(new: SubscribersConfig) -> Change:
        change = compare(running[-1], new)
        running.append(new)
        return change

    watcher = Watcher(path, current=lambda: running[-1], apply=apply, signal=lambda: signal[0])
    assert watcher.check() == "unchanged"  # the first look: the file is what runs
    write(path, sub("a"))  # the same content written again
    assert watcher.check() == "unchanged"
    write(path, sub("a"), sub("b"))
    assert watcher.check() == "reloaded"
    assert [s.id for s in running[-1].subscribers] == ["a", "b"]
    assert watcher.check() == "unchanged"

    write(path, sub("a", events=["reseller.usr.*"]))
    with pytest.raises(ConfigError) as expected:
        load_config(path)
    assert watcher.check() == "refused"
    assert watcher.check() == "unchanged"  # refused once, not every second
    assert (watcher.reloads, watcher.refused) == (1, 1)
    assert [s.id for s in running[-1].subscribers] == ["a", "b"]  # the running one stays
    refusals = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(refusals) == 1
    assert str(expected.value) in refusals[0].getMessage()

    path.unlink()
    assert watcher.check() == "refused"
    write(path, sub("b"))
    signal[0] = b"1"
    assert watcher.check() == "reloaded"
    assert [s.id for s in running[-1].subscribers] == ["b"]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reseller_webhooks.worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_a_running_worker_takes_an_edited_file_and_refuses_a_broken_one(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    deployment.subscriber("a", f"{receiver.url}/a")
    deployment.subscriber("b", f"{receiver.url}/b")  # its secret is in the worker's environment
    deployment.subscriber(
        "c", f"{receiver.url}/c", retry={"schedule_s": [0, 3600, 3600], "jitter": 0}
    )
    script.always("/c", Reply(503))
    subs = deployment.config["subscribers"]
    b = subs.pop(1)
    worker = deployment.start_worker()
    first = publisher.user_created(sample_user())
    wait_until(lambda: rdb.hget(keys.delivery(f"{first}:c"), "state") == b"waiting", what="retry")

    # c leaves, b arrives: b's deliveries start, c's waiting retry is dead-lettered now (c has
    # unfinished work: the operator confirms its removal).
    subs[1] = b
    path = Path(deployment.env["WEBHOOKS_SUBSCRIBERS"])  # rewrites the file
    allowed = cli(worker.env, "subscribers", "reload", "--allow-removal")
    assert allowed.returncode == 0, allowed.stderr
    wait_until(
        lambda: "subscribers file reloaded" in worker.log(),
        timeout_s=5,
        what="reload",
    )
    assert "added b; removed c" in worker.log()
    second = publisher.user_created(sample_user())
    wait_until(
        lambda: any(r.headers["webhook-id"] == second for r in receiver.received if r.path == "/b"),
        timeout_s=5,
        what="b receives",
    )
    wait_until(lambda: rdb.zscore(keys.dead, f"{first}:c") is not None, what="c dead-lettered")
    assert rdb.hget(keys.delivery(f"{first}:c"), "reason").decode() == REMOVED_REASON
    assert [r.path for r in receiver.received].count("/c") == 1  # no attempt after the removal

    # A broken file: refused with the check's message; deliveries go on as before.
    path.write_text(path.read_text().replace("reseller.user.*", "reseller.usr.*", 1))
    checked = cli(worker.env, "subscribers", "check")
    assert checked.returncode == 2
    message = checked.stderr.strip().removeprefix("error: ")
    assert "matches no event type" in message
    wait_until(lambda: message in worker.log(), timeout_s=5, what="refusal logged")
    assert any("ERROR" in line and message in line for line in worker.log().splitlines())
    third = publisher.user_created(sample_user())
    for target in ("/a", "/b"):
        wait_until(
            lambda t=target: any(
                r.headers["webhook-id"] == third and r.path == t for r in receiver.received
            ),
            what=f"{target} receives under the running configuration",
        )
    at_a = [r.headers["webhook-id"] for r in receiver.received if r.path == "/a"]
    assert sorted(at_a) == sorted([first, second, third])  # none lost, none doubled
    signalled = cli(worker.env, "subscribers", "reload")
    assert (signalled.returncode, signalled.stderr.strip()) == (2, f"error: {message}")

    # Fixed again: the reload command checks it and tells the workers.
    path.write_text(yaml.safe_dump({"allow_private_networks": True, **deployment.config}))
    signalled = cli(worker.env, "subscribers", "reload")
    assert signalled.returncode == 0, signalled.stderr
    assert signalled.stdout.strip() == "2 subscriber(s) checked; workers told to reload"
    assert rdb.get(keys.subscribers_reload) == b"2"  # the confirmed removal, then this one


def test_a_task_in_flight_finishes_with_the_setup_it_started_with(
    redis_url: str,
    rdb: redis.Redis,
    keys: Keys,
    publisher: Publisher,
    receiver: Receiver,
    script: Script,
) -> None:
    from reseller_webhooks.worker.config.settings import WorkerSettings
    from reseller_webhooks.worker.delivery.deliverer import Deliverer
    from reseller_webhooks.worker.delivery.runtime import make_sender, make_store

    settings = WorkerSettings(redis_url=redis_url)
    a = {**sub("a"), "url": f"{receiver.url}/a"}
    before = parse_config({"allow_private_networks": True, "subscribers": [a]})
    after = parse_config({"allow_private_networks": True, "subscribers": [sub("b")]})
    old_sender = make_sender(settings, before)
    deliverer = Deliverer(
        config=before, store=make_store(settings, rdb), sender=old_sender, settings=settings
    )
    script.then("/a", Reply(200, delay_s=1.0))
    publisher.user_created(sample_user())
    (trigger,) = deliverer.drain().triggers
    served: list[Any] = []
    task = threading.Thread(
        target=lambda: served.append(deliverer.serve("a", trigger.token, lambda _t: None))
    )
    task.start()
    receiver.wait_for(1)  # the attempt is in flight ...
    old = deliverer.reconfigure(after, make_sender(settings, after))  # ... when "a" is removed
    assert old.sender is old_sender
    assert deliverer.config is after
    assert old_sender.transport._pool.connections  # still in use: not closed
    task.join(timeout=30)
    assert served[0].counts == {"delivered": 1}  # finished with the old setup
    assert not old_sender.transport._pool.connections  # closed once it ended


@pytest.mark.parametrize(
    ("known", "kept", "open_counts", "removed", "with_work", "every"),
    [
        (["a", "b"], ["a", "b"], {"a": 3}, (), {}, False),
        (["a", "b"], ["a"], {}, ("b",), {}, False),  # nothing pending: taken
        (["a", "b"], ["a"], {"b": 2, "a": 9}, ("b",), {"b": 2}, False),
        (["a", "b"], [], {}, ("a", "b"), {}, True),  # every subscriber, even without work
        (["a"], ["z"], {"a": 1}, ("a",), {"a": 1}, True),
        ([], [], {}, (), {}, False),  # nothing known: nothing to remove
        ([], ["a"], {}, (), {}, False),
    ],
)
def test_assess_refuses_removing_every_subscriber_or_unfinished_work(
    known: list[str],
    kept: list[str],
    open_counts: dict[str, int],
    removed: tuple[str, ...],
    with_work: dict[str, int],
    every: bool,
) -> None:
    removal = assess(known, kept, open_counts)
    assert (removal.removed, dict(removal.open), removal.every) == (removed, with_work, every)
    assert removal.refused == (every or bool(with_work))


def test_a_file_without_the_subscribers_key_is_invalid() -> None:
    with pytest.raises(ConfigError, match="field 'subscribers': required"):
        parse_yaml("allow_private_networks: true\n", source="subscribers.yaml")
    assert parse_yaml("subscribers: []\n").subscribers == ()  # none, said explicitly


def full_text(*subs: dict[str, Any]) -> str:
    return yaml.safe_dump({"allow_private_networks": True, "subscribers": list(subs)})


def cut_before(text: str, sub_id: str) -> str:
    """``text`` cut at the start of subscriber ``sub_id``'s entry: still valid YAML."""
    lines = text.splitlines(keepends=True)
    at = lines.index(f"  id: {sub_id}\n")
    while not lines[at].startswith("- "):
        at -= 1
    return "".join(lines[:at])


def test_the_watcher_refuses_a_truncated_file_unless_the_removal_is_confirmed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "subscribers.yaml"
    text = full_text(sub("a"), sub("b"), sub("c"))
    path.write_text(text)
    running = [load_config(path)]
    open_work = {"b": 2}
    confirmed: list[str] = []

    def apply(new: SubscribersConfig) -> Change:
        change = compare(running[-1], new)
        running.append(new)
        return change

    watcher = Watcher(
        path,
        current=lambda: running[-1],
        apply=apply,
        pending=lambda ids: {i: n for i, n in open_work.items() if i in ids},
        confirmed=lambda d: d in confirmed,
    )
    assert watcher.check() == "unchanged"
    first_line = text.splitlines(keepends=True)[0]
    assert first_line == "allow_private_networks: true\n"
    cut = cut_before(text, "b")  # keeps a alone
    assert [s.id for s in parse_yaml(cut).subscribers] == ["a"]
    for truncated, reason in [
        (first_line, "field 'subscribers': required"),
        (cut, "would remove subscriber(s) with 2 unfinished delivery(ies): b (2)"),
        ("subscribers: []\n", "would remove every subscriber (a, b, c)"),
    ]:
        caplog.clear()
        path.write_text(truncated)
        assert watcher.check() == "refused"
        assert watcher.check() == "unchanged"  # refused once, not every second
        (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert error.startswith("subscribers file refused, the running configuration stays")
        assert reason in error
        assert len(running) == 1  # nothing applied

    path.write_text(cut)
    open_work.clear()  # b's work finished: removing b alone drops nothing
    watcher = Watcher(path, current=lambda: running[-1], apply=apply)
    assert watcher.check() == "reloaded"
    assert [s.id for s in running[-1].subscribers] == ["a"]

    running[1:] = []
    open_work["c"] = 1
    watcher = Watcher(
        path,
        current=lambda: running[-1],
        apply=apply,
        pending=lambda ids: {i: n for i, n in open_work.items() if i in ids},
        confirmed=lambda d: d in confirmed,
        signal=lambda: str(len(confirmed)).encode(),
    )
    assert watcher.check() == "refused"
    confirmed.append(digest(cut))  # `subscribers reload --allow-removal` on this very text
    assert watcher.check() == "reloaded"
    assert [s.id for s in running[-1].subscribers] == ["a"]


def test_the_watcher_takes_a_file_only_once_two_reads_agree(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text(full_text(sub("a")))
    running = [load_config(path)]
    writes: list[str] = []  # what a writer puts in the file while the watcher pauses

    def pause(seconds: float) -> None:
        assert seconds == 0.25
        if writes:
            path.write_text(writes.pop())

    def apply(new: SubscribersConfig) -> Change:
        running.append(new)
        return compare(running[-2], new)

    watcher = Watcher(path, current=lambda: running[-1], apply=apply, settle_s=0.25, pause=pause)
    assert watcher.check() == "unchanged"
    path.write_text(full_text(sub("a"), sub("b", timeout_s=3)))
    writes.append(full_text(sub("a"), sub("b")))  # still being written at the second read
    assert watcher.check() == "unsettled"
    assert len(running) == 1
    assert watcher.check() == "reloaded"  # unchanged across both reads now
    assert running[-1].by_id["b"].timeout_s == 15


def user(n: int) -> dict[str, Any]:
    return {**sample_user(), "id": f"usr_reload{n}"}


@pytest.mark.slow
def test_a_truncated_file_drops_no_work_until_an_operator_allows_the_removal(
    deployment: Deployment,
    receiver: Receiver,
    script: Script,
    publisher: Publisher,
    rdb: redis.Redis,
    keys: Keys,
) -> None:
    retry = {"schedule_s": [0, 3600], "jitter": 0}
    deployment.subscriber("a", f"{receiver.url}/a")
    deployment.subscriber("b", f"{receiver.url}/b", retry=retry)
    deployment.subscriber("c", f"{receiver.url}/c", retry=retry)
    script.always("/b", Reply(503))
    script.always("/c", Reply(503))
    deployment.settings.update(
        WEBHOOKS_SUBSCRIBERS_WATCH_S="0.2", WEBHOOKS_SUBSCRIBERS_SETTLE_S="0.1"
    )
    worker = deployment.start_worker()
    env = worker.env  # the file is rewritten by hand from here on
    path = Path(env["WEBHOOKS_SUBSCRIBERS"])
    text = path.read_text()
    first = publisher.user_created(user(1))
    for sub_id in ("b", "c"):
        wait_until(
            lambda s=sub_id: rdb.hget(keys.delivery(f"{first}:{s}"), "state") == b"waiting",
            what=f"{sub_id} waits for its retry",
        )
    cut = cut_before(text, "b")
    first_line = text.splitlines(keepends=True)[0]
    assert first_line == "allow_private_networks: true\n"

    def delivered_everywhere(event_id: str) -> bool:
        return {r.path for r in receiver.received if r.headers["webhook-id"] == event_id} == {
            "/a",
            "/b",
            "/c",
        }

    for n, (truncated, reason) in enumerate(
        [
            (first_line, "field 'subscribers': required"),
            # b and c now hold two retries each (the first event and the one sent after the cut)
            (cut, "would remove subscriber(s) with 4 unfinished delivery(ies): b (2), c (2)"),
        ]
    ):
        path.write_text(truncated)
        with ThreadPoolExecutor(2) as pool:  # the operator's check and reload say it too
            answers = list(pool.map(lambda c: cli(env, "subscribers", c), ["check", "reload"]))
        for answer in answers:
            assert answer.returncode == 2
            assert reason in answer.stderr
        wait_until(
            lambda r=reason: any(
                "ERROR" in line and "subscribers file refused" in line and r in line
                for line in worker.log().splitlines()
            ),
            timeout_s=10,
            what="the refusal logged at ERROR",
        )
        # The running subscribers keep delivering, and nothing was dead-lettered.
        later = publisher.user_created(user(2 + n))
        wait_until(lambda e=later: delivered_everywhere(e), what="all three still served")
        assert rdb.zcard(keys.dead) == 0
    assert "subscribers file reloaded" not in worker.log()

    allowed = cli(env, "subscribers", "reload", "--allow-removal")
    assert allowed.returncode == 0, allowed.stderr
    assert "removal allowed: subscriber(s) with" in allowed.stdout
    wait_until(
        lambda: "subscribers file reloaded: 1 subscriber(s); removed b, c" in worker.log(),
        timeout_s=10,
        what="the confirmed reload",
    )
    for sub_id in ("b", "c"):
        wait_until(
            lambda s=sub_id: rdb.zscore(keys.dead, f"{first}:{s}") is not None,
            what=f"{sub_id}'s work dead-lettered",
        )
        assert rdb.hget(keys.delivery(f"{first}:{sub_id}"), "reason").decode() == REMOVED_REASON


def test_check_without_redis_names_the_offline_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from reseller_webhooks.worker.cli.commands import main

    path = tmp_path / "subscribers.yaml"
    path.write_text(full_text(sub("a")))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")  # nothing listens there
    run = CliRunner().invoke(main, ["subscribers", "check", "--file", str(path)])
    assert run.exit_code == 3
    assert "--offline checks the file without Redis" in run.output
    run = CliRunner().invoke(main, ["subscribers", "check", "--file", str(path), "--offline"])
    assert run.exit_code == 0, run.output


def test_a_refusal_names_at_most_ten_subscribers_and_counts_the_rest() -> None:
    known = [f"s{i:02}" for i in range(12)]
    removal = assess(known, [], {"s03": 2, "s11": 1})
    message = str(removal.error("subscribers.yaml"))
    assert message.startswith(
        "subscribers.yaml: would remove every subscriber (s00, s01, s02, s03, s04, s05, s06,"
        " s07, s08, s09 and 2 more) and subscriber(s) with 3 unfinished delivery(ies):"
        " s03 (2), s11 (1); their work would be dead-lettered;"
    )
    assert message.endswith("`reseller-webhooks subscribers reload --allow-removal`")


@pytest.mark.slow
def test_a_worker_refuses_to_start_with_a_file_that_drops_unfinished_work(
    deployment: Deployment, store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    routes = {"reseller.user.created": [Route("a", False, False), Route("b", False, False)]}
    publisher.user_created(sample_user())
    publisher.user_created(sample_user())
    store.drain(routes, batch=10, now_iso="2026-01-01T00:00:00.000Z")
    assert rdb.zcard(keys.open_deliveries("b")) == 2
    deployment.subscriber("a", "http://127.0.0.1:9/a")  # the file cut to a alone

    worker, errors = deployment.start_failure()
    assert worker.process.returncode == 2
    assert errors == [
        f"error: {deployment.env['WEBHOOKS_SUBSCRIBERS']}: the worker will not start with this"
        " file: it would remove subscriber(s) with 2 unfinished delivery(ies): b (2); their work"
        " would be dead-lettered; if that is intended, confirm it with `reseller-webhooks"
        " subscribers reload --allow-removal` (then start the worker again)"
    ]
    assert rdb.zcard(keys.dead) == 0
    assert rdb.zcard(keys.open_deliveries("b")) == 2

    allowed = deployment.cli("subscribers", "reload", "--allow-removal")
    assert allowed.returncode == 0, allowed.stderr
    started = deployment.start_worker()
    assert "removal confirmed by an operator: subscriber(s) with 2 unfinished" in started.log()
