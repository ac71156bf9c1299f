"""The aimass side of a worker process, run as a Celery bootstep: load and warm the
models before consuming, run the bulk consumer, answer its probes, publish heartbeats and
metrics, and pick up newly published versions."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from celery import bootsteps
from celery.signals import worker_ready
from celery.worker import state as worker_state
from celery.worker.control import inspect_command
from kombu import Queue

from aimass.protocol.connections import connect
from aimass.protocol.heartbeats import Heartbeat, ServedModelInfo
from aimass.protocol.keys import (
    CELERY_QUEUE,
    WORKER_HEARTBEAT_INTERVAL_S,
    WORKER_HEARTBEAT_TTL_S,
    queue_name,
    worker_key,
)
from aimass.protocol.records import ResultRecord
from aimass.protocol.shards import keyspace
from aimass.worker.cancels import CancelledJobs
from aimass.worker.consumer import BulkConsumer, InFlight
from aimass.worker.endpoints import Checks, Endpoints, passed
from aimass.worker.events import TaskEvents
from aimass.worker.gauges import Gauges
from aimass.worker.logs import report_job
from aimass.worker.metrics import Metrics
from aimass.worker.redis_queue import ModelQueues
from aimass.worker.restore import Restorer
from aimass.worker.served import ServedModels
from aimass.worker.settings import WorkerSettings
from aimass.worker.streams import StreamWriter

log = logging.getLogger(__name__)

# The exit code of a worker process whose device broke (os.EX_SOFTWARE): its supervisor,
# or the container's restart policy, starts it again.
EXIT_DEVICE_LOST = 70

# A consumer loop that has not come round for this long is stuck (its longest wait, for
# Redis to come back, is 5 s).
STALL_S = 60.0
# How long one answer of Redis to a readiness probe is reused.
REDIS_PROBE_S = 1.0


class WorkerService:
    """Everything aimass runs inside one Celery worker process."""

    def __init__(self, app: Any, hostname: str, worker: Any = None) -> None:
        self.app = app
        self.settings: WorkerSettings = app.aimass_settings
        self.hostname = hostname
        self.events = TaskEvents(
            app,
            hostname,
            lambda: getattr(getattr(worker, "consumer", None), "event_dispatcher", None),
        )
        self.metrics = Metrics()
        self._redis = connect(
            self.settings.redis_url, health_check_interval=30, socket_keepalive=True
        )
        self.cancelled = CancelledJobs(self._redis)
        # Today's key names on one Redis; the sharded ones on a cluster.
        space = keyspace(self._redis, self.settings.queue_shards)
        # Runs a worker dies in are counted only where the bulk consumer reads the count.
        counts_runs = self.bulk and self.settings.max_deliveries > 0
        self.queues_of_models = ModelQueues(
            self._redis,
            [],
            hostname,
            self.settings.result_ttl_s,
            self.settings.max_message_bytes,
            self.settings.track_started,
            space,
            self.settings.move_takes_at,
            counts_runs and self.settings.count_runs_at == "take",
        )
        # kombu restores a dead worker's jobs on one Redis; on a cluster, this does. It
        # also puts back the holds of workers that died inside a large take (held.py).
        self.restorer = Restorer(self._redis, space, self.settings.visibility_timeout_s)
        self.streams = StreamWriter(self._redis, self.settings.result_ttl_s)
        self.runtime = ServedModels(
            self.settings,
            app.aimass_plan,
            on_batch=self.metrics.on_batch,
            idle=self._feeder_idle,
            cancelled=self.cancelled,
            mark_runs=self.queues_of_models.mark_runs if counts_runs else None,
            on_device_lost=self._device_lost,
            streams=self.streams,
        )
        self.consumer: BulkConsumer | None = None
        self.device_lost: str | None = None  # why, once the device's context broke
        self.ready = threading.Event()
        # Set when Celery's worker is ready: the models are warm and jobs are taken.
        self.consuming = threading.Event()
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._housekeeping, name="aimass-housekeeping", daemon=True
        )
        # Short timeouts: a probe must answer within the orchestrator's own timeout.
        self._probe_redis = connect(
            self.settings.redis_url, socket_timeout=1, socket_connect_timeout=1
        )
        self._redis_seen: tuple[float, bool | str] = (0.0, "not asked yet")
        self.endpoints = Endpoints(self.metrics.registry, self.liveness, self.readiness)
        self.gauges = Gauges(
            self.metrics,
            self._probe_redis,
            self.queues_of_models,
            self.runtime,
            app.aimass_plan.gpu,
        )
        self.json_logs = self.settings.log_format == "json"

    def _device_lost(self, reason: str) -> None:
        """The device's context is broken: every later batch would fail. Stop taking jobs
        and exit (EXIT_DEVICE_LOST), so that the supervisor or the orchestrator starts
        the process afresh; unready meanwhile. The jobs of the failed batches stay
        unacknowledged and go to another worker."""
        if self.device_lost is not None:
            return
        self.device_lost = reason
        if self.consumer is not None:
            self.consumer.stop_taking()
        log.critical(
            "the device's context is broken (%s): this worker process exits "
            "with code %d to be started afresh",
            reason,
            EXIT_DEVICE_LOST,
        )
        self.metrics.ready.set(0)
        worker_state.should_stop = EXIT_DEVICE_LOST  # Celery's warm shutdown, this code

    def _feeder_idle(self) -> bool:
        return self.consumer is not None and self.consumer.idle()

    @property
    def bulk(self) -> bool:
        return self.settings.consumer == "bulk"

    def start(self) -> None:
        if self.settings.log_level != "DEBUG":
            # One INFO line per job costs more than a small model's inference.
            logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
        # Probes answer while the models load: live, not ready.
        if self.settings.metrics_port:
            self.endpoints.serve(self.settings.metrics_port)
        self.cancelled.start()
        self.runtime.load()
        self.metrics.set_models([m.describe() for m in self.runtime.models()])
        self.metrics.cpu_fallback.set(int(self.runtime.cpu_fallback()))
        queues = self.queues_of_models
        queues.set_models(self.runtime.model_names())
        if self.bulk:
            self.app.amqp.queues.select([CELERY_QUEUE])
            self.consumer = BulkConsumer(
                self.runtime,
                queues,
                self._jobs_held(),
                revoked=worker_state.revoked,
                on_settled=self._on_settled,
                on_load=self.metrics.in_flight.set,
                idle_poll_s=self.settings.idle_poll_ms / 1000.0,
                max_deliveries=self.settings.max_deliveries,
                max_result_bytes=self.settings.max_result_bytes,
                cancelled=self.cancelled,
            )
            self.consumer.start()
        else:
            self.app.amqp.queues.select([queue_name(n) for n in self.runtime.model_names()])
        self._thread.start()

    def stop(self) -> None:
        """Stop taking jobs, settle those in flight, unload, and leave the registry."""
        self._stop.set()
        if self.consumer is not None:
            self.consumer.stop()
        self.runtime.stop()
        self.streams.stop()
        self.endpoints.close()
        self.gauges.close()
        self.cancelled.stop()
        with contextlib.suppress(redis.RedisError):
            self._redis.delete(worker_key(self.hostname))

    def housekeeping_alive(self) -> bool:
        return self._thread.is_alive() or not self._thread.ident  # not started yet: fine

    def queues(self) -> list[str]:
        return [queue_name(name) for name in self.runtime.model_names()]

    def _jobs_held(self) -> int:
        """How many jobs the bulk consumer may hold: AIMASS_CONCURRENCY, or where it is
        auto, twice the most jobs one run of a model served now takes."""
        held = self.settings.jobs_held(m.jobs_per_run for m in self.runtime.models())
        if self.settings.concurrency is None:
            log.info("holding up to %d jobs at once (AIMASS_CONCURRENCY=auto)", held)
        return held

    def heartbeat(self) -> Heartbeat:
        """What this process says of itself under its heartbeat key."""
        gpu = self.app.aimass_plan.gpu
        return Heartbeat(
            hostname=self.hostname,
            host=socket.gethostname(),
            pid=os.getpid(),
            ready=self.consuming.is_set(),
            started_at=self.started_at,
            updated_at=time.time(),
            consumer=self.settings.consumer,
            queues=self.queues(),
            models=[ServedModelInfo(**m.describe()) for m in self.runtime.models()],
            in_flight=self.consumer.capacity.used if self.consumer else None,
            device=self._device(),
            requested_device="cpu" if gpu is None else f"gpu:{gpu}",
            cpu_fallback=self.runtime.cpu_fallback(),
            cpu_fallback_allowed=self.settings.allow_cpu_fallback,
        )

    def _device(self) -> str:
        """Where the models run: the GPU asked for, or the CPU when nothing was asked or
        the CUDA provider could not start."""
        gpu = self.app.aimass_plan.gpu
        return "cpu" if gpu is None or self.runtime.cpu_fallback() else f"gpu:{gpu}"

    def _on_settled(self, flight: InFlight, record: ResultRecord | None) -> None:
        started = flight.started
        kind = started.kind if started else "-"
        version = str(started.version) if started else "-"
        queue_ms = None
        if started is not None and started.future.done() and started.future.exception() is None:
            queue_ms = started.future.result().queue_ms
        self.metrics.on_settled(
            flight.model, version, str(kind), record, queue_ms, time.monotonic() - flight.arrived
        )
        self.events.on_settled(flight, record)
        report_job(flight, record, self.json_logs)

    def _housekeeping(self) -> None:
        next_reload = time.monotonic() + self.settings.reload_interval_s
        next_beat = next_sweep = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep()
                next_sweep = now + restore_interval(self.settings.visibility_timeout_s)
            if now >= next_beat:
                self._beat()
                next_beat = now + (WORKER_HEARTBEAT_INTERVAL_S if self.consuming.is_set() else 1.0)
            if self.settings.reload_interval_s and now >= next_reload:
                self._reload()
                next_reload = time.monotonic() + self.settings.reload_interval_s
            if self.gauges.refresh():
                self.readiness()  # keeps aimass_ready current without a probe asking
            self._stop.wait(1.0)

    def liveness(self) -> Checks:
        """The process's threads are there and moving (``/livez``). Redis is not asked."""
        checks: Checks = {
            "housekeeping": self.housekeeping_alive() or "the housekeeping thread has died"
        }
        if self.consumer is not None:
            checks.update(self.consumer.health(STALL_S))
        checks["streams"] = self.streams.alive() or "the stream writer thread has died"
        for model in self.runtime.models():
            name = f"batcher {model.version.name} v{model.version.version}"
            checks[name] = model.batcher.alive() or "its thread has died"
            if model.decoder is not None:
                checks[f"decoder {model.version.name} v{model.version.version}"] = (
                    model.decoder.alive() or "its thread has died"
                )
        return checks

    def readiness(self) -> Checks:
        """Models loaded and warm, Redis answering, running where asked to (``/readyz``,
        and the ``aimass_ready`` gauge)."""
        checks: Checks = {
            "models": self.consuming.is_set() or "loading and warming the models",
            "redis": self._redis_answers(),
        }
        if self.device_lost is not None:
            checks["device"] = (
                f"the device's context is broken ({self.device_lost}); "
                "the process is exiting to be started afresh"
            )
        elif self.runtime.cpu_fallback() and not self.settings.allow_cpu_fallback:
            checks["device"] = (
                f"asked for GPU {self.app.aimass_plan.gpu}, runs on the "
                "CPU (set AIMASS_ALLOW_CPU_FALLBACK=1 to accept)"
            )
        self.metrics.ready.set(int(passed(checks)))
        return checks

    def _redis_answers(self) -> bool | str:
        asked_at, answer = self._redis_seen
        if time.monotonic() - asked_at < REDIS_PROBE_S:
            return answer
        try:
            answer = bool(self._probe_redis.ping()) or "Redis did not answer PING"
        except redis.RedisError as exc:
            answer = f"Redis unreachable ({type(exc).__name__}: {exc})"
        self._redis_seen = (time.monotonic(), answer)
        return answer

    def _beat(self) -> None:
        try:
            self._redis.set(
                worker_key(self.hostname), self.heartbeat().encode(), ex=WORKER_HEARTBEAT_TTL_S
            )
        except redis.RedisError as exc:  # Redis may be restarting; the next beat retries
            log.warning("heartbeat failed: %s", exc)

    def _sweep(self) -> None:
        try:
            restored = self.restorer.sweep()
        except redis.RedisError as exc:  # a failover under way: the next sweep retries
            log.warning("restoring unacknowledged jobs failed: %s", exc)
            return
        if restored:
            log.warning("restored %d jobs held past the visibility timeout", restored)

    def _reload(self) -> None:
        try:
            changed = self.runtime.reload()
        except Exception:
            log.exception("reload failed")
            return
        if changed:
            self.metrics.set_models([m.describe() for m in self.runtime.models()])
            self.queues_of_models.set_models(self.runtime.model_names())
            if self.consumer is not None:
                self.consumer.capacity.resize(self._jobs_held())
            else:  # Celery's own consumer: tell it of the new queues
                for name in changed:
                    self.app.control.add_consumer(queue_name(name), destination=[self.hostname])
            self._beat()


def restore_interval(visibility_timeout_s: int) -> int:
    """How often dead workers' jobs are looked for: as kombu is told to on one Redis
    (worker/app.py), a fifth of the visibility timeout, 1 to 10 s."""
    return max(1, min(10, visibility_timeout_s // 5))


class ServiceStep(bootsteps.StartStopStep):
    """Runs the ``WorkerService`` in Celery's worker: started before the consumer (so
    models are warm before any job is taken), stopped after it."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.service: WorkerService | None = None

    def start(self, worker: Any) -> None:
        self.service = WorkerService(worker.app, worker.hostname, worker)
        worker.app.aimass_service = self.service
        self.service.start()
        service = self.service

        def on_ready(sender: Any = None, **kwargs: Any) -> None:
            if getattr(sender, "hostname", None) == worker.hostname:
                service.consuming.set()

        worker_ready.connect(on_ready, weak=False)

    def stop(self, worker: Any) -> None:
        if self.service is not None:
            self.service.stop()


@inspect_command()
def aimass(state: Any) -> dict[str, Any]:
    """``celery inspect aimass``: the worker's models, queues and jobs in flight."""
    service: WorkerService | None = getattr(state.consumer.app, "aimass_service", None)
    return service.heartbeat().as_json() if service else {}


@inspect_command()
def active_queues(state: Any) -> list[dict[str, Any]]:
    """``celery inspect active_queues`` (and Flower): the queues this worker consumes,
    the model queues its bulk consumer serves included."""
    consumer = state.consumer
    queues = list(consumer.task_consumer.queues) if consumer.task_consumer else []
    service: WorkerService | None = getattr(consumer.app, "aimass_service", None)
    if service is not None and service.bulk:
        queues += [Queue(name) for name in service.queues()]
    return [dict(queue.as_dict(recurse=True)) for queue in queues]
