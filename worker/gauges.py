"""How a worker process reports on itself: its liveness and readiness probes, and the
gauges read from outside it (queue backlog, GPUs), served on its metrics port
(worker/endpoints.py)."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from aimass.protocol.connections import connect
from aimass.protocol.keys import dead_letter_key, submitted_key
from aimass.worker.endpoints import Checks, Endpoints, passed
from aimass.worker.gpu import Nvml

if TYPE_CHECKING:
    from aimass.worker.service import WorkerService

log = logging.getLogger(__name__)

# A consumer loop that has not come round for this long is stuck (its longest wait, for
# Redis to come back, is 5 s).
STALL_S = 60.0
# How long one answer of Redis to a readiness probe is reused.
REDIS_PROBE_S = 1.0
# How often the backlog and GPU gauges are read.
GAUGES_EVERY_S = 2.0


class Monitor:
    """Probes and gauges of one ``WorkerService``."""

    def __init__(self, service: WorkerService) -> None:
        self.service = service
        self.metrics = service.metrics
        self.endpoints = Endpoints(self.metrics.registry, self.live, self.ready)
        # Short timeouts: a probe must answer within the orchestrator's own timeout.
        self._redis = connect(service.settings.redis_url, socket_timeout=1,
                              socket_connect_timeout=1)
        self._redis_seen: tuple[float, bool | str] = (0.0, "not asked yet")
        gpu = service.app.aimass_plan.gpu
        self._nvml = Nvml(indices=[gpu]) if gpu is not None else None
        self._gauges_at = 0.0

    def serve(self, port: int) -> None:
        if port:
            self.endpoints.serve(port)

    def close(self) -> None:
        self.endpoints.close()
        if self._nvml is not None:
            self._nvml.close()

    def live(self) -> Checks:
        """The process's threads are there and moving. Redis is not asked."""
        service = self.service
        checks: Checks = {"housekeeping": service.housekeeping_alive()
                          or "the housekeeping thread has died"}
        if service.consumer is not None:
            checks.update(service.consumer.health(STALL_S))
        for model in service.runtime.models():
            name = f"batcher {model.version.name} v{model.version.version}"
            checks[name] = model.batcher.alive() or "its thread has died"
        return checks

    def ready(self) -> Checks:
        """Models loaded and warm, Redis answering, running where asked to."""
        service = self.service
        checks: Checks = {
            "models": service.ready.is_set() or "loading and warming the models",
            "redis": self._redis_answers(),
        }
        if service.runtime.cpu_fallback() and not service.settings.allow_cpu_fallback:
            checks["device"] = (f"asked for GPU {service.app.aimass_plan.gpu}, runs on the "
                                "CPU (set AIMASS_ALLOW_CPU_FALLBACK=1 to accept)")
        self.metrics.ready.set(int(passed(checks)))
        return checks

    def _redis_answers(self) -> bool | str:
        asked_at, answer = self._redis_seen
        if time.monotonic() - asked_at < REDIS_PROBE_S:
            return answer
        try:
            answer = bool(self._redis.ping()) or "Redis did not answer PING"
        except redis.RedisError as exc:
            answer = f"Redis unreachable ({type(exc).__name__}: {exc})"
        self._redis_seen = (time.monotonic(), answer)
        return answer

    def refresh_gauges(self) -> None:
        """The backlog of each served model's queue and the GPU's load, when due."""
        now = time.monotonic()
        if now - self._gauges_at < GAUGES_EVERY_S:
            return
        self._gauges_at = now
        if self._nvml is not None:
            self.metrics.set_gpus(self._nvml.read())
        self.metrics.cpu_fallback.set(int(self.service.runtime.cpu_fallback()))
        self.ready()  # keeps aimass_ready current without a probe asking
        try:
            self._refresh_backlog()
        except redis.RedisError as exc:  # Redis may be restarting: the next round retries
            log.debug("backlog gauges not read: %s", exc)

    def _refresh_backlog(self) -> None:
        queues = self.service.queues_of_models
        backlog = queues.backlog()
        ids = sorted({job_id for lists in backlog.values() for _, job_id in lists.values()
                      if job_id})
        models = self.service.runtime.models()
        pipe = self._redis.pipeline(transaction=False)
        pipe.mget([submitted_key(i) for i in ids] or ["-"])
        for model in models:
            pipe.llen(dead_letter_key(model.version.name))
        submitted, *parked = pipe.execute()
        records = dict(zip(ids, submitted, strict=False))
        now = time.time()
        for model, dead in zip(models, parked, strict=True):
            lists = backlog.get(model.version.name, {})
            ages = [now - at for _, job_id in lists.values()
                    if job_id and (at := _submitted_at(records.get(job_id)))]
            self.metrics.set_backlog(model.version.name, model.version.version,
                                     {step: depth for step, (depth, _) in lists.items()},
                                     max(ages, default=None), int(dead))


def _submitted_at(record: Any) -> float | None:
    """When a job was submitted, from its submission record (``None`` without one)."""
    if not record:
        return None
    try:
        value = json.loads(record).get("submitted_at")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None
