"""Celery task events for jobs the bulk consumer runs, so that Flower and
``celery events`` see them as they see any Celery task.

Sent only while the worker's task events are on (``-E``, or Flower's
``enable_events``), from the finisher thread, on a connection of their own.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aimass.protocol.records import ResultRecord, ResultState
from aimass.worker.consumer import InFlight

log = logging.getLogger(__name__)


class TaskEvents:
    """``task-received`` and ``task-succeeded`` / ``task-failed`` / ``task-revoked``."""

    def __init__(self, app: Any, hostname: str, consumer_dispatcher: Any) -> None:
        self.app = app
        self.hostname = hostname
        self.consumer_dispatcher = consumer_dispatcher  # Celery's own: says whether events are on
        self._dispatcher: Any = None

    def enabled(self) -> bool:
        dispatcher = self.consumer_dispatcher()
        return bool(
            dispatcher is not None and dispatcher.enabled and "task" in (dispatcher.groups or ())
        )

    def on_settled(self, flight: InFlight, record: ResultRecord | None) -> None:
        envelope = flight.envelope
        if record is None or envelope.task_id is None or not self.enabled():
            return
        try:
            self._send(flight, envelope.task_id, envelope.task or "", record)
        except Exception as exc:  # events are best effort; jobs are not
            log.warning("could not send task events: %s", exc)
            self._dispatcher = None

    def _send(self, flight: InFlight, task_id: str, task: str, record: ResultRecord) -> None:
        if self._dispatcher is None:
            connection = self.app.connection_for_write()
            self._dispatcher = self.app.events.Dispatcher(
                connection, hostname=self.hostname, enabled=True, groups=["task"]
            )
        runtime = time.monotonic() - flight.arrived
        received = time.time() - runtime
        self._dispatcher.send(
            "task-received",
            uuid=task_id,
            name=task,
            args="()",
            kwargs=str(envelope_kwargsrepr(flight)),
            root_id=task_id,
            parent_id=None,
            retries=0,
            eta=None,
            expires=None,
            timestamp=received,
        )
        if record.state is ResultState.succeeded:
            result = record.result
            summary = {k: result[k] for k in ("model", "version", "timing") if k in result}
            self._dispatcher.send(
                "task-succeeded", uuid=task_id, result=repr(summary), runtime=runtime
            )
        elif record.state is ResultState.revoked:
            self._dispatcher.send(
                "task-revoked", uuid=task_id, terminated=False, signum=None, expired=True
            )
        else:
            exc = f"{record.error_type}({record.error_message!r})"
            self._dispatcher.send("task-failed", uuid=task_id, exception=exc, traceback="")


def envelope_kwargsrepr(flight: InFlight) -> str:
    """What Celery shows as the job's kwargs: the producer's short repr when it sent one."""
    message = flight.envelope.message
    return str((message.headers.get("kwargsrepr") if message else None) or "{...}")
