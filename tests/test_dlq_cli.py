"""The ``dlq`` commands' answers a user reads: newest first, something printed when there is
nothing, and a declined purge that is not an error. Dead letters made by the state machine's
scripts against a real Redis (no worker needed); the command run in-process."""

from __future__ import annotations

from pathlib import Path

import redis
from click.testing import CliRunner, Result

from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.cli import commands as cli
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.records.shapes import Claim
from reseller_webhooks.worker.records.store import Store
from tests.helpers import ROUTES, Deployment, wait_until
from tests.test_store import finish


def two_dead_letters(store: Store, publisher: Publisher, rdb: redis.Redis) -> tuple[str, str]:
    """Two deliveries to ``s`` dead-lettered one after the other (a millisecond apart at
    least); their ids, the older first."""
    ids = [f"{publisher.user_created({**sample_user(), 'id': u})}:s" for u in ("usr_a", "usr_b")]
    drained = store.drain(ROUTES, batch=100, now_iso="2026-01-01T00:00:00Z")
    claims: dict[str, Claim] = {}
    while len(claims) < 2:  # a claim takes a share of the ready list
        batch = store.claim("s", drained.triggers[0].token, most=10, lease_ms=10_000, bound=4)
        assert batch is not None
        claims |= {c.delivery_id: c for c in batch.claims}
    store.finish([(claims[ids[0]], finish("dead"))])
    died = rdb.zscore(Keys("rw").dead, ids[0])
    assert died is not None

    def now_ms() -> int:
        seconds, micros = rdb.time()
        return int(seconds) * 1000 + int(micros) // 1000

    wait_until(lambda: now_ms() > died, what="a later millisecond on the Redis clock")
    store.finish([(claims[ids[1]], finish("dead"))])
    return ids[0], ids[1]


def run(deployment: Deployment, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli.main, ["dlq", *args], env=deployment.env, input=input)


def test_dlq_list_is_newest_first_and_a_declined_purge_exits_0(
    tmp_path: Path, redis_url: str, store: Store, publisher: Publisher, rdb: redis.Redis
) -> None:
    deployment = Deployment(tmp_path=tmp_path, redis_url=redis_url)
    deployment.subscriber("s", "http://127.0.0.1:9/hook")
    older, newer = two_dead_letters(store, publisher, rdb)

    listed = run(deployment, "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines[:2]] == [newer, older]
    assert lines[2] == "2 dead letter(s)"

    declined = run(deployment, "purge", "--all", input="n\n")
    assert declined.exit_code == 0, declined.output
    assert declined.stdout.splitlines()[-1] == "nothing purged"
    assert rdb.zcard(Keys("rw").dead) == 2


def test_dlq_messages_says_when_there_are_none(tmp_path: Path, redis_url: str) -> None:
    deployment = Deployment(tmp_path=tmp_path, redis_url=redis_url)
    deployment.subscriber("s", "http://127.0.0.1:9/hook")
    shown = run(deployment, "messages")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == ""  # stdout stays one JSON object per line
    assert shown.stderr.strip() == "no bad queue messages recorded"
