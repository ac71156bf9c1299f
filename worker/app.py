"""The Celery app of the workers: settings, queues, and the two tasks.

``create_app(settings)`` is called once at start-up; nothing here reads the
environment at import. ``worker.main`` builds the app from the environment for
``celery -A worker.main ...`` (Flower, inspect, control).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from celery import Celery, Task, bootsteps
from celery.signals import worker_ready
from kombu import Queue

from producer.contract import (
    CLASSIFY_TASK,
    GENERATE_TASK,
    PRIORITY_SEPARATOR,
    PRIORITY_STEPS,
    JobKind,
    queue_name,
)
from producer.errors import AimassError
from producer.keys import WORKER_HEARTBEAT_INTERVAL_S, WORKER_HEARTBEAT_TTL_S, worker_key
from worker.devices import plan_for
from worker.repository import ModelRepository
from worker.runtime import Runtime
from worker.sessions import DevicePlan
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """Celery settings that the delivery guarantees rest on (see docs/reliability.md)."""
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        # JSON by default, msgpack accepted; pickle never.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json", "msgpack"],
        "result_accept_content": ["json"],
        # At least once: acknowledge after the result is stored; a job whose worker died
        # goes back to the queue.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_track_started": True,
        "result_expires": settings.result_ttl_s,
        "result_extended": False,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "priority_steps": list(PRIORITY_STEPS),
            "sep": PRIORITY_SEPARATOR,
            "queue_order_strategy": "priority",
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
        # Producers always name the model's queue; nothing should land here.
        "task_default_queue": "aimass.default",
        "enable_utc": True,
    }


def create_app(settings: WorkerSettings, plan: DevicePlan | None = None) -> Celery:
    """The worker's Celery app; its runtime is loaded when the worker starts."""
    app = Celery("aimass", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.aimass_settings = settings
    app.aimass_plan = plan or plan_for(settings, None)
    app.aimass_runtime = None
    names = list(settings.models) or ModelRepository(settings.model_repository).names()
    app.conf.task_queues = [Queue(queue_name(name)) for name in names]
    _register_tasks(app)
    app.steps["worker"].add(RuntimeStep)
    return app


def served_queues(app: Celery) -> list[Queue]:
    runtime: Runtime = app.aimass_runtime
    return [Queue(queue_name(name)) for name in runtime.model_names()]


def _register_tasks(app: Celery) -> None:
    def make(kind: JobKind, name: str) -> None:
        @app.task(name=name, bind=True, throws=(AimassError,), acks_late=True)
        def run_job(self: Task, **kwargs: Any) -> dict[str, Any]:
            runtime: Runtime = app.aimass_runtime
            return runtime.handle(kind, kwargs, arrived=time.monotonic())

    make(JobKind.classify, CLASSIFY_TASK)
    make(JobKind.generate, GENERATE_TASK)


class RuntimeStep(bootsteps.StartStopStep):
    """Loads and warms every model before the consumer starts, then announces the
    worker in Redis (``aimass:worker:<hostname>``) while it lives."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._hostname = worker.hostname

    def _on_ready(self, sender: Any = None, **kwargs: Any) -> None:
        if getattr(sender, "hostname", None) == self._hostname:
            self._ready.set()

    def start(self, worker: Any) -> None:
        app = worker.app
        if app.aimass_settings.log_level != "DEBUG":
            # One INFO line per job costs more than a small model's inference.
            logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
        runtime = Runtime(app.aimass_settings, app.aimass_plan)
        runtime.load()
        app.aimass_runtime = runtime
        app.amqp.queues.select([queue.name for queue in served_queues(app)])
        worker_ready.connect(self._on_ready, weak=False)
        self._thread = threading.Thread(target=self._beat, args=(worker,), daemon=True,
                                        name="aimass-heartbeat")
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        runtime: Runtime | None = worker.app.aimass_runtime
        if runtime is not None:
            runtime.stop()
        with worker.app.pool.acquire(block=True) as conn:
            conn.default_channel.client.delete(worker_key(worker.hostname))

    def _beat(self, worker: Any) -> None:
        app = worker.app
        runtime: Runtime = app.aimass_runtime
        started = time.time()
        while not self._stop.is_set():
            ready = self._ready.is_set()
            info = {
                "hostname": worker.hostname,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "ready": ready,
                "started_at": started,
                "updated_at": time.time(),
                "queues": [q.name for q in served_queues(app)],
                "models": [m.describe() for m in runtime.models()],
                "device": "cpu" if app.aimass_plan.gpu is None else f"gpu:{app.aimass_plan.gpu}",
            }
            try:
                with app.pool.acquire(block=True, timeout=5) as conn:
                    conn.default_channel.client.set(
                        worker_key(worker.hostname), json.dumps(info), ex=WORKER_HEARTBEAT_TTL_S)
            except Exception as exc:  # Redis may be restarting; the next beat retries
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(1.0 if not ready else WORKER_HEARTBEAT_INTERVAL_S)
