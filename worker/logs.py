"""Logs for log pipelines: ``AIMASS_LOG_FORMAT=json`` writes one JSON object per line,
and a line per settled job with its id, model, version, batch and outcome, and the W3C
trace context the producer sent (``traceparent``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aimass.protocol.tracing import record_span, spans_enabled

if TYPE_CHECKING:
    from aimass.protocol.records import ResultRecord
    from aimass.worker.consumer import InFlight

# Fields a log call may attach (``extra=``) that go into the JSON object as they are.
JOB_FIELDS = (
    "job_id",
    "task",
    "model",
    "version",
    "kind",
    "batch_size",
    "bucket",
    "outcome",
    "reason",
    "queue_ms",
    "inference_ms",
    "job_ms",
    "traceparent",
)

job_log = logging.getLogger("aimass.jobs")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the job fields given,
    and the exception, if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for field in JOB_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def say_json(message: str, file: Any = None) -> None:
    """Celery's own notices (``safe_say``: shutdown, restart) as JSON lines too. Called
    from signal handlers, as Celery calls its own: one write, no logging locks."""
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "WARNING",
        "logger": "celery.worker",
        "message": message,
    }
    target = file or sys.__stderr__
    if target is not None:
        target.write(json.dumps(entry) + "\n")
        target.flush()


def use_json(logger: logging.Logger | None = None) -> None:
    """Put the JSON formatter on every handler of ``logger`` (the root by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(JsonFormatter())


def job_fields(flight: InFlight, record: ResultRecord | None) -> dict[str, Any]:
    """What a settled job's log line and span say about it."""
    started = flight.started
    message = flight.envelope.message
    fields: dict[str, Any] = {
        "job_id": flight.envelope.task_id,
        "task": flight.envelope.task,  # aimass.classify, aimass.generate or aimass.infer
        "model": flight.model,
        "version": started.version if started else None,
        "kind": started.kind if started else None,
        "outcome": record.outcome if record else "refused",
        "reason": (record.error_type or None) if record else None,
        "job_ms": round((time.monotonic() - flight.arrived) * 1000.0, 3),
        "traceparent": message.traceparent if message else None,
    }
    if started is not None and started.future.done() and started.future.exception() is None:
        output = started.future.result()
        fields.update(
            batch_size=output.batch_size,
            bucket=output.run_size,
            queue_ms=round(output.queue_ms, 3),
            inference_ms=round(output.inference_ms, 3),
        )
    return fields


def report_job(flight: InFlight, record: ResultRecord | None, json_logs: bool) -> None:
    """A line for a settled job with JSON logs (a line per job costs more than a small
    model's inference, and text logs are read by people), and a span where tracing is set
    up (aimass/protocol/tracing.py)."""
    spans = spans_enabled()
    if not (json_logs or spans):
        return
    fields = job_fields(flight, record)
    if json_logs:
        job_log.info("job %s %s", fields["job_id"], fields["outcome"], extra=fields)
    if spans:
        end = time.time()
        record_span(
            f"aimass.{fields['kind'] or 'job'}",
            fields["traceparent"],
            end - fields["job_ms"] / 1000.0,
            end,
            {
                f"aimass.{key}": fields.get(key)
                for key in (
                    "job_id",
                    "model",
                    "version",
                    "outcome",
                    "reason",
                    "batch_size",
                    "bucket",
                )
            },
        )
