"""Live worker heartbeats: the JSON each worker process refreshes under
``aimass:worker:<hostname>``, typed at both ends (``Heartbeat``, with a ``ServedModelInfo``
per model).

Written by each worker process (``WorkerService.heartbeat``); read by ``aimass workers``
and ``aimass check``, by the producer commands (to say why a job times out), and by
whatever starts workers and waits for them to be ready (``aimass.launcher``). Fields may be
added, never renamed: a reader keeps the fields it does not know (``extra``), so that an
older ``aimass workers`` shows a newer worker whole.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aimass.protocol.keys import WORKER_HEARTBEAT_TTL_S, WORKER_PREFIX
from aimass.protocol.shards import mget


class ServedModelInfo(BaseModel):
    """One model version a worker process serves, as its heartbeat describes it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str
    version: int = 0
    kind: str = ""
    providers: list[str] = Field(default_factory=list)  # what its sessions really got
    max_batch_size: int = 0
    batch_limit_source: str = ""  # "setting", "manifest", "manifest (gpu)" or "sweep"
    max_queue_delay_ms: float = 0.0
    buckets: list[int] = Field(default_factory=list)  # empty: batches at exact sizes
    settled_ms: dict[str, float] = Field(default_factory=dict)  # a run's time, by size
    shared_weight_bytes: int | None = None  # bucket sessions' one copy of the weights
    weights_shared: bool | None = None
    sharing_refused: str | None = None  # why each bucket session holds its own copy
    batched: bool = True  # False: the graph has no batch dimension, one job per run


class Heartbeat(BaseModel):
    """What one worker process says of itself every few seconds."""

    model_config = ConfigDict(frozen=True, extra="allow")

    hostname: str  # its Celery node name
    host: str = ""  # the machine (socket.gethostname())
    pid: int = 0
    ready: bool = False  # models warm and jobs being taken
    started_at: float = 0.0
    updated_at: float = 0.0  # time.time() of this beat: older than the TTL is dead
    consumer: str = "bulk"  # bulk or celery
    queues: list[str] = Field(default_factory=list)
    models: list[ServedModelInfo] = Field(default_factory=list)
    in_flight: int | None = None  # jobs held (bulk consumer)
    device: str = "cpu"  # where the models run: "cpu" or "gpu:N"
    requested_device: str = "cpu"  # where they were asked to run
    cpu_fallback: bool = False  # asked for a GPU, running on the CPU
    cpu_fallback_allowed: bool = False  # AIMASS_ALLOW_CPU_FALLBACK on that worker

    def encode(self) -> str:
        return self.model_dump_json()

    @classmethod
    def decode(cls, raw: bytes | str) -> Heartbeat | None:
        """The heartbeat in ``raw``, or None for something that is not one."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError:
            return None

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types (``aimass workers --json``, the benchmark's report)."""
        return self.model_dump(mode="json")


def live_heartbeats(client: redis.Redis, now: float | None = None) -> list[Heartbeat]:
    """The heartbeats of the worker processes alive ``now``, by hostname.

    A heartbeat counts when its ``updated_at`` lies within ``WORKER_HEARTBEAT_TTL_S`` of
    ``now``. Its key expires then too; the check does not rely on every writer's TTL."""
    keys = list(client.scan_iter(match=f"{WORKER_PREFIX}*", count=1000))
    beats = [Heartbeat.decode(raw) for raw in mget(client, keys) if raw]
    now = time.time() if now is None else now
    live = [b for b in beats if b is not None and now - b.updated_at < WORKER_HEARTBEAT_TTL_S]
    return sorted(live, key=lambda beat: beat.hostname)


def served_models(beats: list[Heartbeat]) -> list[str]:
    """The names of the models these heartbeats serve, sorted."""
    return sorted({model.name for beat in beats for model in beat.models})
