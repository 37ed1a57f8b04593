"""The subscribers file reloaded while workers run: picked up within seconds, applied between
deliveries, a removed subscriber's work dead-lettered, a broken file refused."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.config.reload import Change, Watcher, compare
from reseller_webhooks.worker.config.subscribers import SubscribersConfig, load_config, parse_config
from reseller_webhooks.worker.delivery.deliverer import REMOVED_REASON
from reseller_webhooks.worker.devserver.receiver import Receiver, Reply
from reseller_webhooks.worker.devserver.samples import sample_user
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

    # c leaves, b arrives: b's deliveries start, c's waiting retry is dead-lettered now.
    subs[1] = b
    path = Path(deployment.env["WEBHOOKS_SUBSCRIBERS"])  # rewrites the file
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
    assert rdb.get(keys.subscribers_reload) == b"1"


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
