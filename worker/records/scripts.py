"""The Lua transitions: every state change of a delivery record is one atomic script.

Each transition is a file in ``lua/`` (``drain``, ``claim``, ``extend``, ``heartbeat``,
``finish``, ``sweep``, ``replay``, ``expedite``, ``erase``) whose header names its ``KEYS`` and
``ARGV``; ``records.store`` is the only caller (``records.erasure`` for ``erase``). This module
only loads them: the text Redis runs for a transition is ``lua/prelude.lua`` followed by the
transition's file. The prelude holds, as locals, what several transitions share (the server
clock, arming and waking slots); nothing else is ever put into a script's text: values come in
as ``ARGV`` (the constants below included), so a script's SHA never changes at run time. A line
number in a Redis error counts the prelude's lines first.

Times are the Redis server's (``TIME``), never a worker's clock: a worker whose clock is off
cannot send a retry early or cut a lease short. Callers pass durations, not instants; only the
human-readable timestamps (attempt logs, operational events' ``triggeredAt``) come from the
caller as text.

A deliver trigger is a *slot*: ``{prefix}:slots:{sub}`` holds one token per Celery message that
may be attempting the subscriber's deliveries, scored by when it lapses. A script that makes
deliveries ready arms a slot when the subscriber has none (and says so: the caller sends the
message); a claim arms one more while work is left, up to the subscriber's bound. So the number
of messages follows the number of subscribers with work, not the number of events.

The same scripts keep what the metrics read (``ops.metrics``) in step with the records, so a
scrape never scans: ``{prefix}:open:{sub}`` indexes a subscriber's unfinished deliveries by
publish time, ``{prefix}:dead-of:{sub}`` its dead letters by time of death, and
``{prefix}:stats:dead-lettered`` counts dead letters ever made, per subscriber.

And what the operator console reads (``records.activity``), as small and bounded: DRAIN lists each
user's latest events (``{prefix}:user-events:{user}``, expiring with the records), FINISH counts
a subscriber's attempts per minute (``{prefix}:rate:{sub}:{minute}``, kept an hour) and lists the
deliveries of its latest attempts (``{prefix}:recent:{sub}``). A list is trimmed only once it
holds twice what is kept, so a push costs one command most of the time.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

#: A user's latest events the console can look up (``Keys.user_events``).
USER_EVENTS_KEPT = 100
#: A subscriber's latest attempts the console shows (``Keys.recent_attempts``).
RECENT_KEPT = 100
#: How long a minute of attempt counts is kept: the success-rate window and a minute of slack.
RATE_TTL_S = 3660

#: The transitions, each ``lua/{name}.lua``.
TRANSITIONS = (
    "drain",
    "claim",
    "extend",
    "heartbeat",
    "finish",
    "sweep",
    "replay",
    "expedite",
    "erase",
)
#: Read-only scripts, loaded the same way (``stats``: what a metrics scrape reads).
READS = ("stats",)
#: Put in front of every transition (see the module doc).
PRELUDE = "prelude"

_FOLDER = resources.files(__name__.rpartition(".")[0]) / "lua"


def lua_file(name: str) -> str:
    """The text of ``lua/{name}.lua`` as it is in the package."""
    return (_FOLDER / f"{name}.lua").read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The script Redis runs for transition (or read) ``name``: the prelude, then its file."""
    if name not in TRANSITIONS and name not in READS:
        raise ValueError(f"no such transition: {name!r}")
    return lua_file(PRELUDE) + "\n" + lua_file(name)


def register(client: redis.Redis, name: str) -> Script:
    """Transition ``name`` on ``client``: called by EVALSHA, and loaded again (then retried) when
    the server answers NOSCRIPT, as after a restart."""
    return client.register_script(source(name))
