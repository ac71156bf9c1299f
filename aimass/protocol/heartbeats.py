"""Live worker heartbeats: the JSON each worker process refreshes under
``aimass:worker:<hostname>`` (host, pid, ready, models, device, queues, ``updated_at``).

Read by ``aimass workers`` and ``aimass check``, by the producer commands (to say why a
job times out), and by whatever starts workers and waits for them to be ready.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from aimass.protocol.keys import WORKER_HEARTBEAT_TTL_S, WORKER_PREFIX


def live_heartbeats(client: redis.Redis, now: float | None = None) -> list[dict[str, Any]]:
    """The heartbeats of the worker processes alive ``now``, parsed, by hostname.

    A heartbeat counts when its ``updated_at`` lies within ``WORKER_HEARTBEAT_TTL_S`` of
    ``now``. Its key expires then too; the check does not rely on every writer's TTL."""
    keys = list(client.scan_iter(match=f"{WORKER_PREFIX}*", count=1000))
    beats = [json.loads(raw) for raw in (client.mget(keys) if keys else []) if raw]
    now = time.time() if now is None else now
    live = [beat for beat in beats if now - beat.get("updated_at", 0) < WORKER_HEARTBEAT_TTL_S]
    return sorted(live, key=lambda beat: str(beat.get("hostname", "")))


def served_models(beats: list[dict[str, Any]]) -> list[str]:
    """The names of the models these heartbeats serve, sorted."""
    return sorted({str(model["name"]) for beat in beats for model in beat.get("models", [])})
