"""Is the visibility timeout long enough for the slowest subscriber? A pure judgement."""

from __future__ import annotations

#: The Svix rule: a task may run for the longest subscriber timeout plus this much before
#: Redis hands its message to a second worker.
VISIBILITY_MARGIN_S = 5.0


def visibility_warning(visibility_timeout_s: float, longest_timeout_s: float) -> str | None:
    """Why the visibility timeout is too short for the slowest subscriber, or ``None``.

    A task still running when the visibility timeout passes has its message restored and run by
    a second worker as well, so the timeout must outlast the longest attempt plus a margin.
    """
    needed = longest_timeout_s + VISIBILITY_MARGIN_S
    if visibility_timeout_s >= needed:
        return None
    return (
        f"WEBHOOKS_VISIBILITY_TIMEOUT_S is {visibility_timeout_s:g} s, shorter than the longest "
        f"subscriber timeout_s ({longest_timeout_s:g} s) plus {VISIBILITY_MARGIN_S:g} s: a "
        f"delivery still running after {visibility_timeout_s:g} s is handed to a second worker; "
        f"set it to at least {needed:g}"
    )
