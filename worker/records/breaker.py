"""The circuit breaker per subscriber, as people see it: its settings and a reading of its state.

The breaker itself is decided in Redis (``lua/finish.lua`` moves it, ``lua/claim.lua`` obeys it,
``lua/prelude.lua``'s ``ensure_slot`` arms no slot before ``hold_until``); the fields live in
``{prefix}:subscriber:{sub}``. This module only reads them, for the status command, the console
and the metrics. See docs/endpoint-health.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Failed attempts in a row that open a subscriber's breaker (``breaker_after`` overrides it).
DEFAULT_BREAKER_AFTER = 10
#: The first probe interval once open, s (times the schedule scale); each failed probe doubles it.
PROBE_MIN_S = 5.0
#: The longest probe interval, s (times the schedule scale); a disabled subscriber's interval.
PROBE_MAX_S = 300.0

#: The circuit breaker's fields in ``{prefix}:subscriber:{sub}`` (an operator's enable or disable
#: clears them), ``hold_until`` with them.
BREAKER_FIELDS = (
    "breaker",
    "opened_at",
    "probe_at",
    "probe_interval_ms",
    "probe_lease",
    "trial_left",
    "hold_until",
)

#: The states, as the status command, the console and the metrics name them.
STATES = ("closed", "open", "half_open")


@dataclass(frozen=True, slots=True)
class BreakerView:
    """A subscriber's breaker at one moment."""

    state: str  # closed | open | half_open
    #: When the next probe may go (server ms); 0 when none is waited for (closed, half-open).
    next_probe_ms: int = 0
    #: A probe is in flight (its lease is live).
    probing: bool = False
    #: Successes still needed to close (half-open).
    trials_left: int = 0

    def describe(self, iso: str = "") -> str:
        """One line for people; ``iso`` is ``next_probe_ms`` as text."""
        if self.state == "closed":
            return "closed"
        if self.state == "half_open":
            return f"half-open ({self.trials_left} trial(s) left)"
        if self.probing:
            return "open (probe in flight)"
        return f"open (next probe {iso or self.next_probe_ms})"


def probe_intervals_ms(schedule_scale: float) -> tuple[int, int]:
    """The shortest and longest probe intervals, ms, on the scaled schedule (at least 1 ms)."""
    return (
        max(1, int(PROBE_MIN_S * 1000 * schedule_scale)),
        max(1, int(PROBE_MAX_S * 1000 * schedule_scale)),
    )


def read_breaker(fields: Mapping[str, str], now_ms: int) -> BreakerView:
    """The breaker in a subscriber's health ``fields`` (its hash, decoded) at server ms
    ``now_ms``; an unknown state reads as closed."""
    state = fields.get("breaker", "")
    if state == "half_open":
        return BreakerView("half_open", trials_left=_int(fields.get("trial_left")))
    if state != "open":
        return BreakerView("closed")
    lease = _int(fields.get("probe_lease"))
    probing = lease >= now_ms
    next_probe = max(_int(fields.get("probe_at")), lease + 1 if probing else 0)
    return BreakerView("open", next_probe_ms=next_probe, probing=probing)


def _int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0
