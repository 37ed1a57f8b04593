"""Tracing (docs/tracing.md): the publisher's trace context recorded with the event, a
``webhook.attempt`` span per attempt exported by a real worker over OTLP/HTTP to a receiver on
loopback, the ``traceparent`` header for subscribers who opt in, and nothing at all while the
``OTEL_*`` variables leave tracing off."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider

from reseller_webhooks.producers.errors import ConfigError
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.trace_context import current_traceparent
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.devserver.receiver import Receiver
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.ops.tracing import exporter_names
from tests.helpers import Deployment, wait_until

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ()),
        (ENDPOINT, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp, console,otlp"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", **ENDPOINT}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, ()),
        ({"OTEL_SDK_DISABLED": "false", **ENDPOINT}, ("otlp",)),
    ],
)
def test_which_exporters_the_environment_asks_for(
    env: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert exporter_names(env) == expected


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: zipkin"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", **ENDPOINT}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ],
)
def test_an_unsupported_exporter_is_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        exporter_names(env)


def test_without_the_extra_a_producer_and_a_worker_work_and_tracing_is_off() -> None:
    """OpenTelemetry unimportable (as without the ``otel`` extra): publishing code records no
    context and a worker's tracing is off; asked for, it is refused with a clear message."""
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "from reseller_webhooks.producers.publisher import Publisher\n"
        "from reseller_webhooks.producers.trace_context import current_traceparent\n"
        "from reseller_webhooks.worker.delivery.runtime import Runtime\n"
        "from reseller_webhooks.worker.ops.tracing import AttemptTracing\n"
        "assert current_traceparent() == ''\n"
        "assert AttemptTracing.from_env({}) is None\n"
        "AttemptTracing.from_env({'OTEL_TRACES_EXPORTER': 'console'})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "ConfigError: OTEL_* variables turn tracing on but OpenTelemetry is not installed" in (
        out.stderr
    )


def test_publish_records_the_callers_traceparent_only_inside_a_span(
    publisher: Publisher, rdb: redis.Redis, keys: Keys
) -> None:
    tracer = TracerProvider().get_tracer("api")
    outside = publisher.user_created(sample_user())
    with tracer.start_as_current_span("PATCH /users") as span:
        inside = publisher.publish_batch([("reseller.user.updated", sample_user())] * 2)
        expected = current_traceparent()
    ctx = span.get_span_context()
    assert expected == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    assert rdb.hget(keys.event(outside), "traceparent") is None
    assert [rdb.hget(keys.event(i), "traceparent") for i in inside] == [expected.encode()] * 2


class Collector:
    """An OTLP/HTTP trace receiver on loopback: every export request, raw and decoded."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.spans: list[Any] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                collector.raw.append(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        collector.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def attributes(span: Any) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


@pytest.mark.slow
def test_attempt_spans_join_the_publishers_trace_and_opted_in_subscribers_get_traceparent(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, collector: Collector
) -> None:
    """Subscriber ``t`` opts in to ``traceparent`` and refuses its first request once (two
    attempts, two spans); ``q`` does not opt in and has a query string with a token in its URL."""
    deployment.subscriber(
        "t", f"{receiver.url}/t", send_traceparent=True, retry={"schedule_s": [0, 0.1]}
    )
    secret = deployment.subscriber("q", f"{receiver.url}/q?token=tok-in-query")
    deployment.settings.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_SERVICE_NAME="webhooks-under-test",
    )
    refused = {"/t"}
    receiver.respond = lambda item: _refuse_once(refused, item)
    user = sample_user()
    tracer = TracerProvider().get_tracer("api")
    with tracer.start_as_current_span("PATCH /users") as api_span:
        event_id = publisher.user_updated(user)
    deployment.start_worker()

    received = receiver.wait_for(3, timeout_s=30)
    wait_until(lambda: len(collector.spans) >= 3, what="three attempt spans exported")
    trace_id = api_span.get_span_context().trace_id
    spans = sorted(collector.spans, key=lambda s: s.start_time_unix_nano)
    assert {s.name for s in spans} == {"webhook.attempt"}
    assert {s.trace_id for s in spans} == {trace_id.to_bytes(16, "big")}
    assert {s.parent_span_id for s in spans} == {api_span.get_span_context().span_id.to_bytes(8)}
    by_sub = sorted(
        ((attributes(s)["webhook.subscriber.id"], attributes(s)) for s in spans),
        key=lambda pair: (pair[0], pair[1]["webhook.attempt"]),
    )
    common = {"webhook.event.type": "reseller.user.updated", "webhook.event.id": event_id}
    assert [(sub, a["webhook.attempt"], a["webhook.outcome"]) for sub, a in by_sub] == [
        ("q", 1, "delivered"),
        ("t", 1, "retry"),
        ("t", 2, "delivered"),
    ]
    assert [a["http.response.status_code"] for _, a in by_sub] == [200, 503, 200]
    assert all(common.items() <= a.items() for _, a in by_sub)

    to_t = [r for r in received if r.path == "/t"]
    assert next(r for r in received if r.path.startswith("/q")).headers.get("traceparent") is None
    t_spans = [s for s in spans if attributes(s)["webhook.subscriber.id"] == "t"]
    assert [r.headers["traceparent"] for r in to_t] == [
        f"00-{trace_id:032x}-{s.span_id.hex()}-{api_span.get_span_context().trace_flags:02x}"
        for s in t_spans
    ]

    exported = b"".join(collector.raw)
    for private in (user["email"], user["name"], "tok-in-query", secret, "127.0.0.1"):
        assert str(private).encode() not in exported


def _refuse_once(refused: set[str], item: Any) -> Any:
    from reseller_webhooks.worker.devserver.receiver import Reply

    if item.path in refused:
        refused.discard(item.path)
        return Reply(503)
    return Reply()


@pytest.mark.slow
def test_off_no_header_and_no_span(
    deployment: Deployment, receiver: Receiver, publisher: Publisher, collector: Collector
) -> None:
    """An opted-in subscriber, a publish inside a span, and a collector listening, but no
    ``OTEL_*`` variable: the request has no ``traceparent`` and nothing is exported."""
    deployment.subscriber("t", f"{receiver.url}/t", send_traceparent=True)
    with TracerProvider().get_tracer("api").start_as_current_span("PATCH /users"):
        publisher.user_updated(sample_user())
    worker = deployment.start_worker()
    (item,) = receiver.wait_for(1, timeout_s=30)
    assert "traceparent" not in item.headers
    assert "opentelemetry" not in worker.log()
    assert collector.raw == []
