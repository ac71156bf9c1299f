"""W3C trace context on task messages, JSON log lines, and spans where OpenTelemetry is
installed (the dev install has its SDK)."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aimass.producer.submission import Submission
from aimass.protocol.messages import TaskMessage
from aimass.protocol.tracing import (
    current_traceparent,
    is_traceparent,
    new_traceparent,
    record_span,
    trace_id,
)
from aimass.worker.logs import JsonFormatter
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def test_a_fresh_traceparent_is_w3c_and_new_each_time() -> None:
    first, second = new_traceparent(), new_traceparent()
    assert is_traceparent(first) and is_traceparent(second) and first != second
    assert not is_traceparent("00-xyz-1-01") and not is_traceparent(None)


def test_every_message_the_client_sends_carries_a_traceparent() -> None:
    message = TaskMessage.decode(Submission.classify(row_image(1), model="tiny").message())
    assert is_traceparent(message.traceparent)
    plain = TaskMessage.build("aimass.classify", "j", {}, queue="aimass.m", priority=0)
    assert "traceparent" not in plain.headers and plain.traceparent is None
    forged = TaskMessage({"traceparent": "not one"}, {}, "application/json", "utf-8", "")
    assert forged.traceparent is None  # a malformed header is not passed on


def test_inside_a_span_the_client_sends_that_spans_trace(spans: InMemorySpanExporter) -> None:
    with trace.get_tracer("test").start_as_current_span("request") as span:
        sent = current_traceparent()
    assert trace_id(sent) == format(span.get_span_context().trace_id, "032x")


def test_a_job_is_recorded_as_a_span_under_the_producers_trace(spans: InMemorySpanExporter) -> None:
    parent = new_traceparent()
    record_span(
        "aimass.classify",
        parent,
        100.0,
        100.25,
        {
            "aimass.model": "tiny",
            "aimass.version": 1,
            "aimass.outcome": "succeeded",
            "aimass.bucket": None,
        },
    )
    (span,) = [s for s in spans.get_finished_spans() if s.name == "aimass.classify"]
    assert format(span.context.trace_id, "032x") == trace_id(parent)
    assert span.parent is not None and format(span.parent.span_id, "016x") == parent.split("-")[2]
    assert (span.end_time - span.start_time) == 250_000_000
    assert span.attributes == {
        "aimass.model": "tiny",
        "aimass.version": 1,
        "aimass.outcome": "succeeded",
    }


def test_a_json_log_line_holds_the_message_and_the_job_fields() -> None:
    record = logging.LogRecord(
        "aimass.jobs", logging.INFO, __file__, 1, "job %s done", ("j-1",), None
    )
    record.job_id, record.model, record.version, record.outcome = "j-1", "tiny", 1, "succeeded"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "job j-1 done" and line["level"] == "INFO"
    assert {k: line[k] for k in ("job_id", "model", "version", "outcome")} == {
        "job_id": "j-1",
        "model": "tiny",
        "version": 1,
        "outcome": "succeeded",
    }
    assert "batch_size" not in line  # fields not given are left out
