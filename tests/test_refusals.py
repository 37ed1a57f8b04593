"""Which Redis errors are refusals (an outage: wait and try again), how long to wait after each,
and that one outage is one log line however many refusals it holds."""

from __future__ import annotations

import logging

import pytest
import redis
from kombu.exceptions import OperationalError
from redis import exceptions

from reseller_webhooks.producers.refusals import refusal
from reseller_webhooks.worker.ops.outage import REFUSING, Outage, backoff_s


def wrapped(inner: BaseException) -> OperationalError:
    """As kombu raises what it met while publishing."""
    try:
        try:
            raise inner
        except redis.RedisError as exc:
            raise OperationalError(str(exc)) from exc
    except OperationalError as outer:
        return outer


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
            "OutOfMemoryError",
        ),
        (exceptions.ReadOnlyError("You can't write against a read only replica."), "ReadOnlyError"),
        (exceptions.MasterDownError("Link with MASTER is down"), "MasterDownError"),
        (
            redis.ResponseError("MISCONF Redis is configured to save RDB snapshots, but ..."),
            "MISCONF",
        ),
        (redis.ResponseError("BUSY Redis is busy running a script. You can only call ..."), "BUSY"),
        (
            redis.ResponseError(
                "Command # 1 (HMGET rw:store id) of pipeline caused error: BUSY Redis is busy"
            ),
            "BUSY",
        ),
        (exceptions.ExecAbortError("Transaction discarded because of: MISCONF ..."), "MISCONF"),
        (redis.ResponseError("Command # 2 (GET k) of pipeline caused error: WRONGTYPE"), None),
        (wrapped(exceptions.OutOfMemoryError("command not allowed")), "OutOfMemoryError"),
        # Not refusals: a fault of the command, or of the connection (handled as before).
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), None),
        (redis.ResponseError("ERR unknown command 'NOPE'"), None),
        (redis.ResponseError("BUSYKEY Target key name already exists."), None),
        (exceptions.NoScriptError("No matching script."), None),
        (redis.ConnectionError("Error 111 connecting"), None),
        (ValueError("MISCONF"), None),
    ],
)
def test_what_is_a_refusal(error: BaseException, kind: str | None) -> None:
    assert refusal(error) == kind


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(0, 0.0), (1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (5, 2.0), (10_000, 2.0)],
)
def test_backoff_doubles_up_to_its_most(failures: int, wait: float) -> None:
    assert backoff_s(failures, first_s=0.25, most_s=2.0) == wait


def test_one_outage_is_one_error_line_and_one_warning_at_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = Outage(clock=lambda: now[0])
    oom = exceptions.OutOfMemoryError("full")
    with caplog.at_level(logging.INFO, logger="reseller_webhooks.worker.ops.outage"):
        assert not outage.refused(redis.ResponseError("WRONGTYPE x"), "reading")
        assert all(outage.refused(oom, "delivering") for _ in range(50))
        assert outage.refusing == "OutOfMemoryError"
        assert REFUSING._value.get() == 1
        now[0] += 12.5
        outage.accepted()
        outage.accepted()
    assert outage.refusing is None
    assert REFUSING._value.get() == 0
    assert [(r.levelname, r.getMessage()[:40]) for r in caplog.records] == [
        ("ERROR", "Redis refuses writes (OutOfMemoryError) "),
        ("WARNING", "Redis accepts writes again after 12.5 s"),
    ]
