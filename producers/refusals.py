"""Redis refusals: the server is up and answers, but refuses a command for now.

A refusal is an outage of the deployment, never a fault of the call: a full server
(``maxmemory`` with ``noeviction``), a replica where a master was expected (after a failover), a
replica cut off from its master, a server that cannot persist (``stop-writes-on-bgsave-error``)
or one busy running a script. Whoever meets one waits and tries again; nothing it refused was
recorded (Redis refuses a command, or a script, before it writes anything).

redis-py gives some of these a class of their own and leaves the others as a plain
``ResponseError`` whose text starts with the server's error code, so both are looked at.
"""

from __future__ import annotations

import redis
from redis import exceptions

#: Refusals redis-py raises as a class of their own.
REFUSAL_CLASSES: tuple[type[redis.RedisError], ...] = (
    exceptions.OutOfMemoryError,
    exceptions.ReadOnlyError,
    exceptions.MasterDownError,
)

#: Error codes of refusals redis-py raises as a plain ``ResponseError`` (the code leads the text).
REFUSAL_CODES = ("MISCONF", "BUSY")
#: What redis-py puts before the server's error inside a pipeline or a transaction.
PIPELINE_MARKERS = ("of pipeline caused error: ", "Transaction discarded because of: ")


def error_code(exc: redis.ResponseError) -> str:
    """The server's error code of ``exc``, also when redis-py wrapped it for a pipeline."""
    text = str(exc)
    for marker in PIPELINE_MARKERS:
        _, found, rest = text.partition(marker)
        if found:
            text = rest
            break
    return text.split(" ", 1)[0]


def refusal(exc: BaseException) -> str | None:
    """The kind of refusal ``exc`` is (``"OutOfMemoryError"``, ``"MISCONF"``, ...), or None when
    it is not one. Never the server's text: it may name a path of the server. An exception
    raised because of one (kombu wraps what it meets while publishing) is one too."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 5:
        if isinstance(cause, REFUSAL_CLASSES):
            return type(cause).__name__
        if isinstance(cause, redis.ResponseError):
            code = error_code(cause)
            if code in REFUSAL_CODES:
                return code
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return None
