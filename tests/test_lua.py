"""The Lua transitions: luacheck-clean, and each file's header names the KEYS and ARGV the store
really passes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.records import scripts
from reseller_webhooks.worker.records.erasure import Erasure
from reseller_webhooks.worker.records.shapes import Claim, Finish
from reseller_webhooks.worker.records.store import Store
from tests.helpers import IN_CI, ROUTES

LUA_DIR = Path(__file__).resolve().parents[1] / "worker" / "records" / "lua"
#: The publisher's one script (the commit point of a publish), in the light producer package.
PRODUCER_LUA_DIR = Path(__file__).resolve().parents[1] / "producers" / "lua"
#: ``-- KEYS[2] ...``, ``-- ARGV[10...] ...`` (a variadic tail, maybe "N fields each").
ENTRY = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.\.)?\]")
STRIDE = re.compile(r"(\d+) fields each")


@pytest.fixture(scope="module")
def luacheck() -> str:
    found = shutil.which("luacheck")
    if not found:
        if IN_CI:
            pytest.fail("CI=true and no luacheck (Debian's lua-check package; .ci/run installs it)")
        pytest.skip("no luacheck on this machine (apt-get install lua-check)")
    return found


def run_luacheck(luacheck: str, *args: str, text: str | None = None) -> None:
    done = subprocess.run(
        [luacheck, "--no-color", *args], input=text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_lua_files_pass_luacheck(luacheck: str) -> None:
    run_luacheck(luacheck, str(LUA_DIR), str(PRODUCER_LUA_DIR))


def test_no_lua_is_left_in_python_strings() -> None:
    """Every script lives in a .lua file: no ``redis.call(`` inside a Python module."""
    root = Path(__file__).resolve().parents[1]
    offenders = [
        str(path.relative_to(root))
        for folder in ("producers", "worker", "bench")
        for path in (root / folder).rglob("*.py")
        if "redis.call(" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


@pytest.mark.parametrize("name", scripts.TRANSITIONS + scripts.READS)
def test_each_script_as_redis_runs_it_passes_luacheck(luacheck: str, name: str) -> None:
    """The prelude and the transition together: what one uses of the other is defined there."""
    run_luacheck(luacheck, "-", text=scripts.source(name))


def test_every_lua_file_is_a_transition_or_the_prelude() -> None:
    names = {p.stem for p in LUA_DIR.glob("*.lua")}
    assert names == {*scripts.TRANSITIONS, *scripts.READS, scripts.PRELUDE}


def header(name: str) -> dict[str, tuple[int, bool, int]]:
    """{"KEYS"/"ARGV": (entries, 1 if the last is a variadic tail, its stride)} as the file's
    header names them; the entries must be numbered 1, 2, ... in order."""
    found: dict[str, list[tuple[int, bool, int]]] = {"KEYS": [], "ARGV": []}
    for line in scripts.lua_file(name).splitlines():
        if not line.startswith("--"):
            break
        match = ENTRY.match(line)
        if match:
            stride = STRIDE.search(line)
            entry = (int(match[2]), bool(match[3]), int(stride[1]) if stride else 1)
            found[match[1]].append(entry)
    out = {}
    for kind, entries in found.items():
        assert [n for n, _, _ in entries] == list(range(1, len(entries) + 1)), (name, kind)
        assert not any(tail for _, tail, _ in entries[:-1]), (name, kind)
        last = entries[-1] if entries else (0, False, 1)
        out[kind] = (len(entries), last[1], last[2])
    return out


@pytest.mark.parametrize("name", scripts.TRANSITIONS + scripts.READS)
def test_each_header_declares_its_globals_for_luacheck(name: str) -> None:
    lines = scripts.lua_file(name).splitlines()
    assert "-- luacheck: globals ARGV KEYS redis" in " ".join(lines[:40])


class Recording(redis.Redis):
    """A real client that notes the (script, KEYS count, ARGV count) of every EVALSHA."""

    calls: list[tuple[str, int, int]]

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.calls.append((sha, numkeys, len(keys_and_args) - numkeys))
        return super().evalsha(sha, numkeys, *keys_and_args)


@pytest.fixture
def recording(redis_url: str) -> Iterator[Recording]:
    client = Recording.from_url(redis_url)
    client.calls = []
    yield client
    client.close()


def result(outcome: str, claim: Claim, **more: Any) -> Finish:
    """An attempt's result; a failed one does not disable the subscriber."""
    letter = {
        "event_id": claim.event_id,
        "subscriber_id": claim.subscriber_id,
        "event_type": "reseller.user.created",
        "body": "{}",
    }
    return Finish(outcome, {"outcome": outcome}, dead_letter=letter, disable_after_ms=10**9, **more)


def every_transition_once(store: Store, publisher: Publisher) -> None:
    """Publish one event and take its delivery through every transition: drain, claim,
    heartbeat, extend, finish (a retry), expedite, sweep, claim, finish (dead), replay, erase."""
    publisher.user_created(sample_user())
    drained = store.drain(ROUTES, batch=100, now_iso="2026-01-01T00:00:00.000Z")
    token = drained.triggers[0].token
    batch = store.claim("s", token, most=10, lease_ms=10_000, bound=4)
    assert batch is not None
    assert len(batch.claims) == 1
    store.heartbeat([("s", token)])
    claims = store.extend(batch.claims, lease_ms=10_000)
    assert store.finish([(c, result("retry", c, delay_ms=60_000)) for c in claims]) == [True]
    assert store.expedite("s") == 1
    assert store.sweep(batch=100, dispatch_lost_after_s=60).moved == 1
    batch = store.claim("s", token, most=10, lease_ms=10_000, bound=4)
    assert batch is not None
    assert len(batch.claims) == 1
    assert store.finish([(c, result("dead", c)) for c in batch.claims]) == [True]
    assert store.replay(batch.claims[0].delivery_id, event_ttl_s=60) is not None
    assert Erasure(store).forget(sample_user()["id"], ["s"]).cancelled == 1


def test_each_header_names_the_keys_and_argv_the_store_passes(
    recording: Recording, keys: Keys, publisher: Publisher
) -> None:
    store = Store(
        recording,
        keys,
        record_retention_s=3600,
        dead_letter_retention_s=3600,
        attempt_log_size=10,
    )
    every_transition_once(store, publisher)
    names = {scripts.register(recording, n).sha: n for n in scripts.TRANSITIONS}
    called = set()
    for sha, n_keys, n_args in recording.calls:
        name = names[sha]
        called.add(name)
        spec = header(name)
        assert (n_keys, False) == spec["KEYS"][:2], name
        fixed, tail, stride = spec["ARGV"]
        if not tail:
            assert n_args == fixed, name
            continue
        fixed -= 1  # the tail's first entry is where it starts
        assert n_args >= fixed, name
        assert (n_args - fixed) % stride == 0, name
    assert called == set(scripts.TRANSITIONS)


def floor_ms(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def test_a_failing_announcement_says_when_the_streak_began(
    store: Store, publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    """``failingSince`` is the first failure's time, not the announcement's (the 3rd in a row)."""
    windows = []
    for _ in range(3):
        publisher.user_created(sample_user())
        store.drain(ROUTES, batch=100, now_iso="2026-01-01T00:00:00.000Z")
        token = rdb.zrange(keys.slots("s"), 0, 0)[0].decode()
        batch = store.claim("s", token, most=10, lease_ms=10_000, bound=4)
        assert batch is not None
        assert len(batch.claims) == 1
        before = floor_ms(datetime.now(UTC))
        assert store.finish([(batch.claims[0], result("dead", batch.claims[0]))]) == [True]
        windows.append((before, datetime.now(UTC)))
    (body,) = [
        json.loads(rdb.hget(key, "body"))
        for key in rdb.scan_iter(match=keys.event("msg_ops*"))
        if rdb.hget(key, "type") == b"webhooks.subscriber.failing"
    ]
    since = datetime.fromisoformat(body["data"]["failingSince"].replace("Z", "+00:00"))
    triggered = datetime.fromisoformat(body["triggeredAt"].replace("Z", "+00:00"))
    assert windows[0][0] <= since <= windows[0][1]
    assert windows[-1][0] <= triggered <= windows[-1][1]
