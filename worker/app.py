"""The Celery app of the workers: settings, queues, and the tasks (one per kind of job).

``create_app(settings)`` is called once at start-up; nothing here reads the
environment at import. ``aimass.worker.main`` builds the app from the environment for
``celery -A aimass.worker.main ...`` (Flower, inspect, control).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject
from kombu import Queue

from aimass.protocol.connections import celery_url, is_cluster
from aimass.protocol.contract import TASKS
from aimass.protocol.errors import AimassError
from aimass.protocol.keys import (
    CELERY_QUEUE,
    DEFAULT_QUEUE,
    PRIORITY_SEPARATOR,
    PRIORITY_STEPS,
    queue_name,
)
from aimass.protocol.manifest import ModelKind
from aimass.worker.batcher import DeviceLost
from aimass.worker.devices import plan_for
from aimass.worker.repository import ModelRepository
from aimass.worker.served import ServedModels
from aimass.worker.service import ServiceStep, restore_interval
from aimass.worker.sessions import DevicePlan
from aimass.worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """Celery settings that the delivery guarantees rest on (see docs/reliability.md)."""
    broker_url, sentinel = celery_url(settings.redis_url)
    return {
        "broker_url": broker_url,
        # A cluster: Celery gets kombu's in-process transport and no result backend (the
        # bulk consumer stores results itself).
        "result_backend": None if is_cluster(settings.redis_url) else broker_url,
        # A Sentinel set: which of its services is the primary (aimass/protocol/connections.py).
        "result_backend_transport_options": dict(sentinel),
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
        "task_track_started": settings.track_started,
        "result_expires": settings.result_ttl_s,
        "result_extended": False,
        "broker_transport_options": {
            **sentinel,
            "visibility_timeout": settings.visibility_timeout_s,
            # kombu sweeps the unacked index every interval x throttle seconds (100 s by
            # default): sweep more often, so that a dead worker's jobs come back soon
            # after the visibility timeout; and do not let a killed worker's sweep lock
            # block the others for kombu's default 5 minutes.
            "unacked_restore_interval": restore_interval(settings.visibility_timeout_s),
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": 30,
            "priority_steps": list(PRIORITY_STEPS),
            "sep": PRIORITY_SEPARATOR,
            "queue_order_strategy": "priority",
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
        "task_default_queue": DEFAULT_QUEUE,
        "enable_utc": True,
    }


def create_app(settings: WorkerSettings, plan: DevicePlan | None = None) -> Celery:
    """The worker's Celery app; its runtime is loaded when the worker starts."""
    app = Celery("aimass", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.aimass_settings = settings
    app.aimass_plan = plan or plan_for(settings, None)
    app.aimass_service = None
    if settings.consumer == "bulk":
        app.conf.task_queues = [Queue(CELERY_QUEUE)]
    else:
        names = list(settings.models) or ModelRepository(settings.model_repository).names()
        app.conf.task_queues = [Queue(queue_name(name)) for name in names]
    _register_tasks(app)
    app.steps["worker"].add(ServiceStep)
    if settings.log_format == "json":
        _log_json()
    return app


def _log_json() -> None:
    """Every log line one JSON object (worker/logs.py): Celery's handlers get the JSON
    formatter once Celery has set them up, and warnings go through logging too."""
    import celery.apps.worker as celery_worker
    from celery.signals import after_setup_logger, after_setup_task_logger

    from aimass.worker.logs import say_json, use_json

    def formatted(logger: logging.Logger, **kwargs: Any) -> None:
        use_json(logger)

    after_setup_logger.connect(formatted, weak=False)
    after_setup_task_logger.connect(formatted, weak=False)
    logging.captureWarnings(True)
    celery_worker.safe_say = say_json  # its notices are printed, not logged


def _register_tasks(app: Celery) -> None:
    def make(kind: ModelKind, name: str) -> None:
        @app.task(name=name, bind=True, throws=(AimassError,), acks_late=True)
        def run_job(self: Task, **kwargs: Any) -> dict[str, Any]:
            runtime: ServedModels = app.aimass_service.runtime
            try:
                return runtime.handle(
                    kind, kwargs, arrived=time.monotonic(), job_id=self.request.id
                )
            except DeviceLost:  # not the job's fault: back to the queue for another worker
                raise Reject("the worker's device is broken", requeue=True) from None

    for kind, name in TASKS.items():
        make(kind, name)
