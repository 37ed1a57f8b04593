"""The caller's trace context, recorded with each event it publishes (docs/tracing.md).

OpenTelemetry is optional: it is looked at only once something in the process has loaded its
trace API (no span can be active otherwise), and nothing is imported here. The context is written
as W3C ``traceparent`` text, whatever propagators the application set.
"""

from __future__ import annotations

import sys


def current_traceparent() -> str:
    """The ``traceparent`` of the span active in the caller; ``""`` without one."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return ""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
