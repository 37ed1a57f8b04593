"""The caller's trace context, recorded with each event it publishes (docs/tracing.md).

OpenTelemetry is optional: it is looked at only when the application has imported it already (no
span can be active otherwise), so a producer without it pays one dictionary look-up per publish.
The context is taken as W3C ``traceparent`` text whatever propagators the application set.
"""

from __future__ import annotations

import re
import sys

#: W3C ``traceparent``, version 00: what an event may carry (anything else is dropped).
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def current_traceparent() -> str:
    """The ``traceparent`` of the span active in the caller; ``""`` without one."""
    if "opentelemetry.context" not in sys.modules:
        return ""
    try:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:  # a partial install: nothing to record
        return ""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    value = carrier.get("traceparent", "")
    return value if TRACEPARENT.match(value) else ""
