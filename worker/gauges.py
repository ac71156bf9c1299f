"""The gauges a worker process reads from outside itself, every few seconds: each served
model's queue backlog and parked jobs, and its GPU's load, served on its metrics port
(worker/endpoints.py). The process answers its own probes (worker/service.py)."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import redis

from aimass.protocol.queues import list_lengths
from aimass.protocol.shards import mget
from aimass.worker.gpu import Nvml
from aimass.worker.metrics import Metrics
from aimass.worker.redis_queue import ModelQueues
from aimass.worker.served import ServedModels

log = logging.getLogger(__name__)

# How often the backlog and GPU gauges are read.
GAUGES_EVERY_S = 2.0


class Gauges:
    """Refreshes the backlog, GPU and CPU-fallback gauges of one worker process."""

    def __init__(
        self,
        metrics: Metrics,
        client: Any,
        queues: ModelQueues,
        runtime: ServedModels,
        gpu: int | None,
    ) -> None:
        self.metrics = metrics
        self._redis = client
        self._queues = queues
        self._runtime = runtime
        # The worker has narrowed CUDA_VISIBLE_DEVICES to its one GPU (worker/devices.py):
        # an NVML number, a UUID or a MIG instance, which Nvml maps to NVML's GPU.
        self._nvml = (
            Nvml(cuda_visible=os.environ.get("CUDA_VISIBLE_DEVICES", str(gpu)))
            if gpu is not None
            else None
        )
        self._gauges_at = 0.0

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.close()

    def refresh(self) -> bool:
        """The backlog of each served model's queue and the GPU's load, when due: whether
        it was."""
        now = time.monotonic()
        if now - self._gauges_at < GAUGES_EVERY_S:
            return False
        self._gauges_at = now
        if self._nvml is not None:
            self.metrics.set_gpus(self._nvml.read())
        self.metrics.cpu_fallback.set(int(self._runtime.cpu_fallback()))
        try:
            self._refresh_backlog()
        except redis.RedisError as exc:  # Redis may be restarting: the next round retries
            log.debug("backlog gauges not read: %s", exc)
        return True

    def _refresh_backlog(self) -> None:
        backlog = self._queues.backlog()
        ids = sorted(
            {job_id for lists in backlog.values() for _, job_id in lists.values() if job_id}
        )
        models = self._runtime.models()
        space = self._queues.space
        submitted = mget(self._redis, [space.submitted_key(i) for i in ids])
        # Each model's dead letters (a list per shard on a cluster), in one round trip.
        dead_keys = [space.dead_letter_keys(model.version.name) for model in models]
        lengths = iter(list_lengths(self._redis, [key for keys in dead_keys for key in keys]))
        parked = [sum(next(lengths) for _ in keys) for keys in dead_keys]
        records = dict(zip(ids, submitted, strict=False))
        now = time.time()
        for model, dead in zip(models, parked, strict=True):
            lists = backlog.get(model.version.name, {})
            ages = [
                now - at
                for _, job_id in lists.values()
                if job_id and (at := _submitted_at(records.get(job_id)))
            ]
            self.metrics.set_backlog(
                model.version.name,
                model.version.version,
                {step: depth for step, (depth, _) in lists.items()},
                max(ages, default=None),
                int(dead),
            )


def _submitted_at(record: Any) -> float | None:
    """When a job was submitted, from its submission marker (``None`` without one)."""
    if not record:
        return None
    try:
        value = json.loads(record).get("submitted_at")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None
