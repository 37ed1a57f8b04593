"""The console with 20,000 dead letters: a page reads one page of them from the indexes, the
purge confirmation names a count and a filter, and "replay all matching" runs beside the
server (``/healthz`` answers while it has not replayed a single one) with its progress on a
page that reloads itself until it is finished."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import redis

from reseller_webhooks.producers.wire import Keys
from tests.helpers import Deployment, wait_until

pytestmark = pytest.mark.slow

LETTERS = {"a": 15_000, "b": 5_000}
TYPES = ("reseller.user.created", "reseller.user.deleted")


def fill(rdb: redis.Redis, keys: Keys) -> None:
    """What FINISH writes for a dead delivery (``lua/finish.lua``, ``dead``), a few thousand
    per command (the letters without their TTL: nothing here waits a week)."""
    seconds, _ = rdb.time()
    now_ms = int(seconds) * 1000
    n = 0
    for sub, count in LETTERS.items():
        for start in range(0, count, 2500):
            pipe = rdb.pipeline(transaction=False)
            died: dict[str, int] = {}
            letters: dict[str, str] = {}
            for i in range(start, min(start + 2500, count)):
                n += 1
                did = f"msg_{n:06d}:{sub}"
                died[did] = now_ms - 10 * n
                letter = {
                    "delivery_id": did,
                    "event_id": f"msg_{n:06d}",
                    "subscriber_id": sub,
                    "url": f"http://127.0.0.1:9/{sub}",
                    "event_type": TYPES[i % 2],
                    "attempts": 1,
                    "dead_at": "2026-01-01T00:00:00.000Z",
                    "body": json.dumps({"type": TYPES[i % 2], "data": {"id": f"usr_{n}"}}),
                    "reason": "HTTP 400",
                }
                letters[keys.dead_letter(did)] = json.dumps(letter)
            pipe.mset(letters)  # type: ignore[arg-type]
            pipe.zadd(keys.dead, died)
            pipe.zadd(keys.dead_of(sub), died)
            pipe.hincrby(keys.dead_lettered, sub, len(died))
            pipe.execute()


def reads(rdb: redis.Redis) -> int:
    """How many dead letters (strings) Redis has been asked for so far."""
    stats = rdb.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


def test_twenty_thousand_dead_letters(deployment: Deployment, rdb: redis.Redis, keys: Keys) -> None:
    for sub in LETTERS:
        deployment.subscriber(sub, f"http://127.0.0.1:9/{sub}")
    fill(rdb, keys)
    _, url = deployment.start_console()
    with httpx.Client(base_url=url, timeout=10) as console:
        pages_read_one_page(console, rdb)
        purge_names_a_count_and_a_filter(console, rdb)
        replay_all_runs_beside_the_server(console, rdb, keys)


def pages_read_one_page(console: httpx.Client, rdb: redis.Redis) -> None:
    before = reads(rdb)
    page = console.get("/dead-letters")
    assert page.status_code == 200
    assert "20000 dead letter(s); the newest 100 shown." in page.text
    assert len(re.findall(r"<tr data-delivery=", page.text)) == 100
    assert reads(rdb) - before <= 100
    assert re.search(r'href="/dead-letters\?from=100"', page.text), "a link to older ones"

    before = reads(rdb)
    second = console.get("/dead-letters?subscriber=b&from=100")
    assert "5000 dead letter(s)" in second.text
    assert len(re.findall(r"<tr data-delivery=\"msg_\d+:b\"", second.text)) == 100
    assert reads(rdb) - before <= 100

    # An event type is in no index: a bounded number of letters is read to find its own.
    before = reads(rdb)
    typed = console.get("/dead-letters", params={"event": TYPES[1]})
    assert len(re.findall(r"<tr data-delivery=", typed.text)) == 100
    assert reads(rdb) - before <= 2000


def purge_names_a_count_and_a_filter(console: httpx.Client, rdb: redis.Redis) -> None:
    before = reads(rdb)
    confirm = console.post(
        "/dead-letters/purge",
        data={"_xsrf": console.cookies["_xsrf"], "scope": "matching", "subscriber": "b"},
    )
    assert confirm.status_code == 200
    assert "Purge 5000 dead letter(s)?" in confirm.text
    assert "subscriber b" in confirm.text
    assert ":b" not in confirm.text  # no delivery id
    assert len(confirm.content) < 10_000
    assert reads(rdb) == before


def replay_all_runs_beside_the_server(console: httpx.Client, rdb: redis.Redis, keys: Keys) -> None:
    # Redis holds every write back: the replay cannot make progress until it is let go.
    rdb.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
    try:
        started = console.post(
            "/dead-letters/replay",
            data={"_xsrf": console.cookies["_xsrf"], "scope": "matching"},
            follow_redirects=False,
        )
        assert started.status_code == 302
        job = started.headers["location"]
        assert re.fullmatch(r"/jobs/[A-Za-z0-9_-]{16}", job)
        assert console.get("/healthz").text == "ok\n"
        assert rdb.zcard(keys.dead) == 20_000  # answered before a single one was replayed
        running = console.get(job)
        assert '<meta http-equiv="refresh"' in running.text
        assert re.search(r"Working: 0 of 20000 gone through|Waiting", running.text)
    finally:
        rdb.execute_command("CLIENT", "UNPAUSE")
    done = wait_until(
        lambda: (page := console.get(job)) and "Finished" in page.text and page,
        timeout_s=60,
        what="the replay finished",
    )
    assert "Finished: Replayed 20000 dead letter(s)." in done.text
    assert 'http-equiv="refresh"' not in done.text
    assert rdb.zcard(keys.dead) == 0
    assert rdb.llen(keys.ready("a")) == LETTERS["a"]
