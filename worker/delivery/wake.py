"""Wake-ups for lingering triggers: a task that runs out of work waits for more at no cost, and
starts again as soon as a script records some.

A dispatch task whose drain leaves the pending list empty, or a deliver task whose claim finds its
subscriber's ready list empty, keeps its trigger armed for a while (:data:`LINGER_S`), so that
the events that follow at a moderate rate need no Celery message of their own. It waits on a
local event, not by polling Redis: the scripts publish on ``{prefix}:wake`` when they give it
work, and one listener thread per worker process, subscribed to that channel, wakes the waiters
of that process.

Only a wait costs a publication. The drain (claim) that starts a wait sets
``{prefix}:dispatch-waiting`` (``{prefix}:slot-waiting:{sub}``) in the same atomic step that sees
the list empty; whatever script then records work there (a publish; a drain, sweep or replay
making deliveries ready while a slot is live; a claim that leaves work) deletes that key and
publishes ``dispatch`` (``slot:{sub}``). A waiter clears its event before that step and waits
after it, so the wake-up cannot slip between the two. One lost anyway (the listener
reconnecting) costs time, never an event: the wait ends with the linger, and the last drain
(claim) disarms the trigger in the same step that sees the list empty, so an event recorded after
it arms a new trigger as before.

At most :attr:`Wakeups.seats` tasks of a process (:func:`seats`: all its threads but two) wait at
once, so a trigger for another subscriber finds a thread. While the listener is not subscribed,
waits fall back to short polls (:data:`POLL_S`). Timed waits are on ``threading.Event``, never
``time.sleep``, whose absolute monotonic deadline clock-shifting tools (libfaketime, used by the
clock-skew tests) move.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from types import TracebackType
from typing import Any

import redis

log = logging.getLogger(__name__)

#: How long a trigger stays armed after its task ran out of work, waiting for more.
LINGER_S = 0.05

#: While the listener is not subscribed, a lingering task looks again this often instead.
POLL_S = 0.002

#: The listener pings Redis after this long without a message, and starts over when the pong
#: does not come within as long again (a connection cut without a reset stays silent).
QUIET_S = 5.0

#: What the scripts publish for the dispatch task; a slot's is :func:`slot_name`.
DISPATCH = "dispatch"


def seats(threads: int) -> int:
    """How many of a worker's threads may linger at once: all but two, and never the last one
    (a worker of one thread does not linger: its only thread would hold up every trigger)."""
    return threads - 2 if threads > 2 else threads - 1


def slot_name(subscriber_id: str, token: str) -> str:
    return f"slot:{subscriber_id}:{token}"


class Wakeups:
    """The wake-ups of one worker process: the listener thread and the tasks waiting on it."""

    def __init__(self, client: redis.Redis, channel: str, *, seats: int) -> None:
        self._client = client
        self._channel = channel
        #: Most tasks of this process lingering at once.
        self.seats = seats
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._lingering = 0
        self._live = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def live(self) -> bool:
        """Subscribed: a wake-up published now reaches this process's waiters."""
        return self._live

    @property
    def name(self) -> str:
        return "webhooks-wakeups"

    def start(self) -> None:
        """Start the listener thread (:meth:`stop` ends it)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._listen, args=(self._stop,), name=self.name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the listener and wait (bounded) for it to end; False if it is still running."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def close(self, timeout_s: float = 5.0) -> None:
        self.stop(timeout_s)

    def linger(self, name: str, seconds: float = LINGER_S) -> Linger:
        """One task's lingering on wake-ups named ``name``; use it as a context manager."""
        return Linger(self, name, seconds)

    def wake(self, name: str) -> None:
        """Wake this process's tasks waiting on ``name``."""
        with self._lock:
            for event in self._waiters.get(name, ()):
                event.set()

    def _listen(self, stop: threading.Event) -> None:
        pubsub: Any = None
        failing = False
        heard = pinged = time.monotonic()
        while not stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub()
                    pubsub.subscribe(self._channel)
                    heard = pinged = time.monotonic()
                message = pubsub.get_message(timeout=1.0)
                now = time.monotonic()
                if message is not None:
                    heard = now
                elif now - heard > 2 * QUIET_S:
                    raise redis.ConnectionError("no reply to a ping")
                elif now - heard > QUIET_S and now - pinged > QUIET_S:
                    pubsub.ping()
                    pinged = now
            except Exception as exc:  # Redis down, or its client closed under us: start over
                self._live = False
                if stop.is_set():
                    break
                if not failing:
                    log.warning(
                        "wake-up listener lost Redis (%s); lingering tasks poll until it is back",
                        type(exc).__name__,
                    )
                failing = True
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                    pubsub = None
                stop.wait(1.0)
                continue
            if message is None:
                continue
            if message["type"] == "subscribe":
                self._live = True
                if failing:
                    log.info("wake-up listener subscribed again")
                failing = False
            elif message["type"] == "message":
                data = message["data"]
                self.wake(data.decode(errors="replace") if isinstance(data, bytes) else str(data))
        self._live = False
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def _register(self, name: str, event: threading.Event) -> None:
        with self._lock:
            self._waiters.setdefault(name, set()).add(event)

    def _unregister(self, name: str, event: threading.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(name)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[name]

    def _take_seat(self) -> bool:
        with self._lock:
            if self._lingering >= self.seats:
                return False
            self._lingering += 1
            return True

    def _give_seat(self) -> None:
        with self._lock:
            self._lingering -= 1


class Linger:
    """One task's lingering, around its loop of drains (claims).

    Before each script call the task asks :meth:`keep` whether the script may keep the trigger
    armed if it finds nothing; after a call that found work it calls :meth:`worked`, and after
    one that found nothing but kept the trigger, :meth:`wait`. Once the linger is over,
    :meth:`keep` says no, and that last call disarms the trigger if nothing came.
    """

    def __init__(self, wakeups: Wakeups, name: str, seconds: float) -> None:
        self._wakeups = wakeups
        self._name = name
        self._seconds = seconds
        self._event = threading.Event()
        self._deadline: float | None = None
        self._seated = False

    def __enter__(self) -> Linger:
        self._wakeups._register(self._name, self._event)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._wakeups._unregister(self._name, self._event)
        self._stand()

    def keep(self) -> bool:
        """Called just before the script call: clears the wake-up (one published after the
        script's check then ends the next wait at once) and says whether to keep the trigger."""
        self._event.clear()
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._stand()
            return False
        return self._sit()

    def worked(self) -> None:
        """The script found work: a later wait lingers its full time again."""
        self._deadline = None
        self._stand()

    def wait(self) -> bool:
        """Wait for a wake-up, at most until the linger's end (a short poll while the listener
        is not subscribed; no wait when every seat is taken: the next :meth:`keep` then says
        no). True when woken."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self._seconds
        if not self._sit():
            return False
        timeout = self._deadline - now
        if not self._wakeups.live:
            timeout = min(timeout, POLL_S)
        return self._event.wait(max(0.0, timeout))

    def _sit(self) -> bool:
        if not self._seated:
            self._seated = self._wakeups._take_seat()
        return self._seated

    def _stand(self) -> None:
        if self._seated:
            self._wakeups._give_seat()
            self._seated = False
