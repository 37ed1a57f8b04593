"""Attempt spans (OpenTelemetry, the ``otel`` extra): off unless the standard ``OTEL_*``
variables turn them on (docs/tracing.md).

Off, nothing here imports OpenTelemetry and the deliverer makes no call into it. On, every
attempt is a ``webhook.attempt`` span, the child of the span that published the event (its
``traceparent`` is recorded with the event), exported by the worker's own tracer provider (the
global one is left to the application). A span carries ids, the event type, the status, the
attempt number and the outcome: never a body, a URL, a header, a secret or a user's data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.worker.delivery.attempt_record import event_type
from reseller_webhooks.worker.records.shapes import Claim, Finish

if TYPE_CHECKING:
    from opentelemetry.trace import Span

#: The span of one attempt.
SPAN_NAME = "webhook.attempt"
#: ``service.name`` unless ``OTEL_SERVICE_NAME`` gives one.
SERVICE_NAME = "reseller-webhooks-worker"
#: Exporters ``OTEL_TRACES_EXPORTER`` may name (``none`` turns traces off).
EXPORTERS = ("otlp", "console")
#: The only OTLP protocol the extra ships an exporter for.
OTLP_PROTOCOL = "http/protobuf"


def exporter_names(env: Mapping[str, str]) -> tuple[str, ...]:
    """Which exporters the environment asks for; ``()``: traces are off.

    On when ``OTEL_TRACES_EXPORTER`` names an exporter, or when it is unset and an OTLP endpoint
    is (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``..._TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true``
    turns everything off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if raw:
        names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        names = ("otlp",)
    else:
        return ()
    unknown = [n for n in names if n not in (*EXPORTERS, "none")]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not supported; use"
            f" {', '.join(EXPORTERS)} or none"
        )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOL
    )
    if "otlp" in names and protocol.strip() != OTLP_PROTOCOL:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: only {OTLP_PROTOCOL} is supported by the worker"
        )
    return tuple(n for n in names if n != "none")


def attempt_attributes(
    *,
    subscriber_id: str,
    event_type: str,
    event_id: str,
    delivery_id: str,
    attempt: int,
    status: int | None,
    outcome: str,
) -> dict[str, str | int]:
    """A span's attributes: ids, type, status, attempt, outcome and nothing else."""
    attributes: dict[str, str | int] = {
        "webhook.subscriber.id": subscriber_id,
        "webhook.event.type": event_type,
        "webhook.event.id": event_id,
        "webhook.delivery.id": delivery_id,
        "webhook.attempt": attempt,
        "webhook.outcome": outcome,
    }
    if status is not None:
        attributes["http.response.status_code"] = status
    return attributes


class AttemptTracing:
    """The worker's tracer provider and the three steps of an attempt's span."""

    def __init__(self, names: tuple[str, ...], env: Mapping[str, str]) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            raise ConfigError(
                "OTEL_* variables turn tracing on but OpenTelemetry is not installed: install"
                " reseller-webhooks[otel], or unset them"
            ) from None
        defaults = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
        self._provider = TracerProvider(resource=Resource.create(defaults))
        for name in names:
            self._provider.add_span_processor(BatchSpanProcessor(self._exporter(name)))
        self._tracer = self._provider.get_tracer("reseller_webhooks.worker")
        self._propagator = TraceContextTextMapPropagator()

    def _exporter(self, name: str) -> Any:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AttemptTracing | None:
        """The tracing the environment asks for, or ``None`` when it is off."""
        names = exporter_names(env)
        return cls(names, env) if names else None

    def traced(
        self, claim: Claim, send_traceparent: bool, attempt: Callable[[str], Finish]
    ) -> Finish:
        """Make ``attempt`` (given the ``traceparent`` to send, '' for none) in its span."""
        span = self.start(claim.traceparent)
        finish = attempt(self.traceparent(span) if send_traceparent else "")
        outcome = str(finish.attempt["outcome"])
        attributes = attempt_attributes(
            subscriber_id=claim.subscriber_id,
            event_type=event_type(claim.body),
            event_id=claim.event_id,
            delivery_id=claim.delivery_id,
            attempt=claim.attempt,
            status=finish.attempt["status"],
            outcome=outcome,
        )
        self.end(span, attributes, failed=outcome != "delivered")
        return finish

    def start(self, traceparent: str) -> Span:
        """Start an attempt's span, the child of the publisher's span when there was one."""
        from opentelemetry.trace import SpanKind

        parent = self._propagator.extract({"traceparent": traceparent}) if traceparent else None
        return self._tracer.start_span(SPAN_NAME, context=parent, kind=SpanKind.CLIENT)

    def traceparent(self, span: Span) -> str:
        """The ``traceparent`` header that makes the subscriber's work a child of ``span``."""
        from opentelemetry.trace import set_span_in_context

        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=set_span_in_context(span))
        return carrier.get("traceparent", "")

    def end(self, span: Span, attributes: Mapping[str, str | int], failed: bool) -> None:
        from opentelemetry.trace import StatusCode

        span.set_attributes(dict(attributes))
        if failed:
            span.set_status(StatusCode.ERROR)
        span.end()

    def shutdown(self) -> None:
        """Export what is buffered and stop."""
        self._provider.shutdown()
