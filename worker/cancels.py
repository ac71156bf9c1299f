"""Jobs cancelled by producers (producer/cancellation.py), as this worker hears of them.

A cancel marks the job in Redis, which the take script reads (a cancelled job taken
later runs nothing), and publishes its id on the cancel channel, which a thread here
listens to, so that the batchers drop a cancelled job still waiting for its batch.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from aimass.protocol.keys import CANCEL_CHANNEL
from aimass.protocol.pubsub import next_message
from aimass.worker.retries import Backoff

log = logging.getLogger(__name__)


class CancelledJobs:
    """The ids heard on the cancel channel; the oldest are forgotten past ``limit`` (a
    job cancelled that long ago has long left any batch)."""

    def __init__(self, client: redis.Redis, limit: int = 100_000) -> None:
        self._client = client
        self._limit = limit
        self._ids: dict[str, None] = {}  # insertion-ordered: the oldest first
        # Every id heard, forgotten or not: what a reader compares to know whether any
        # came since it last looked (the length stops growing at the limit).
        self.heard = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="aimass-cancels", daemon=True)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, job_id: str) -> None:
        with self._lock:
            self._ids[job_id] = None
            self.heard += 1
            while len(self._ids) > self._limit:
                del self._ids[next(iter(self._ids))]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _listen(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            pubsub: Any = None
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CANCEL_CHANNEL)
                backoff.reset()
                while not self._stop.is_set():
                    message = next_message(pubsub, 1.0)
                    if message is not None:
                        data = message["data"]
                        self.add(data.decode() if isinstance(data, bytes) else str(data))
            except redis.RedisError as exc:  # Redis restarting: listen again when it is back
                log.warning(
                    "cancel channel unavailable (%s); retrying in %.1f s", exc, backoff.pause
                )
                backoff.wait(self._stop)
            finally:
                if pubsub is not None:
                    pubsub.close()
