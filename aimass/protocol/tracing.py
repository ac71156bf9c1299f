"""W3C trace context across producer and worker.

The client puts a ``traceparent`` header on each task message: the current OpenTelemetry
span's, where the process uses OpenTelemetry (``aimass[otel]``) and a span is active,
else a fresh one, so that a job can be followed from the service that sent it through the
worker's logs. Workers log it with the job (``AIMASS_LOG_FORMAT=json``) and, where
OpenTelemetry is installed, record the job as a span under it.
"""

from __future__ import annotations

import re
import secrets
import sys
from functools import cache
from types import SimpleNamespace
from typing import Any

TRACEPARENT = "traceparent"
_FORMAT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def new_traceparent() -> str:
    """A fresh trace: version 00, random trace and span ids, sampled."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def current_traceparent() -> str:
    """The active OpenTelemetry span's context, else a fresh trace."""
    otel = _opentelemetry()
    if otel is not None:
        carrier: dict[str, str] = {}
        otel.propagate.inject(carrier)
        if is_traceparent(carrier.get(TRACEPARENT)):
            return carrier[TRACEPARENT]
    return new_traceparent()


def is_traceparent(value: Any) -> bool:
    return isinstance(value, str) and _FORMAT.fullmatch(value) is not None


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


def spans_enabled() -> bool:
    """True where OpenTelemetry is installed and a tracer provider is set up (by the
    application, or ``opentelemetry-instrument``): spans cost a little per job, and
    nothing would receive them otherwise."""
    otel = _opentelemetry()
    if otel is None:
        return False
    name = type(otel.trace.get_tracer_provider()).__name__
    return name not in ("ProxyTracerProvider", "NoOpTracerProvider")


def record_span(
    name: str, traceparent: str | None, start_s: float, end_s: float, attributes: dict[str, Any]
) -> None:
    """A finished span under ``traceparent`` (times: seconds since the epoch), where
    OpenTelemetry is installed; nothing otherwise. Never raises: tracing must not fail
    a job."""
    otel = _opentelemetry()
    if otel is None:
        return
    try:
        context = otel.propagate.extract({TRACEPARENT: traceparent}) if traceparent else None
        tracer = otel.trace.get_tracer("aimass")
        span = tracer.start_span(
            name,
            context=context,
            start_time=int(start_s * 1e9),
            attributes={k: v for k, v in attributes.items() if v is not None},
        )
        span.end(end_time=int(end_s * 1e9))
    except Exception:  # best effort, by design
        return


def _opentelemetry() -> Any:
    """The ``opentelemetry`` API (trace and propagate), or ``None`` until the application
    has imported it: a process that traces has set OpenTelemetry up before its first
    job, and one that does not is spared the import (memory and time)."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    return _imported_opentelemetry()


@cache
def _imported_opentelemetry() -> Any:
    from opentelemetry import propagate, trace

    return SimpleNamespace(propagate=propagate, trace=trace)
