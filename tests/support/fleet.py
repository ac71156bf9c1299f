"""Workers started without waiting (so that a test can kill one while another starts),
and a watcher that records every result the workers publish."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import redis

from aimass.protocol.keys import RESULT_KEY_PREFIX
from aimass.protocol.pubsub import next_message
from tests.support.processes import WorkerProcess

FINAL_STATES = ("SUCCESS", "FAILURE", "REVOKED")


class LaunchedWorker(WorkerProcess):
    """A ``WorkerProcess`` that can be launched without waiting for it to be ready."""

    def launch(self) -> LaunchedWorker:
        self.launched_at = time.monotonic()
        super().launch()
        return self

    def ready(self) -> bool:
        info = self.heartbeat() if self.alive() else None
        return bool(info and info.ready)


class Fleet:
    """Numbered workers of one configuration, each with its own log."""

    def __init__(
        self, redis_url: str, repository: Path, logs: Path, args: list[str], env: dict[str, str]
    ) -> None:
        self.redis_url, self.repository, self.logs = redis_url, repository, logs
        self.args, self.env = args, env
        self.started: list[LaunchedWorker] = []

    def launch(self) -> LaunchedWorker:
        worker = LaunchedWorker(
            self.redis_url,
            self.repository,
            self.logs / f"worker-{len(self.started)}.log",
            self.args,
            self.env,
        )
        self.started.append(worker.launch())
        return worker

    def running(self) -> list[LaunchedWorker]:
        return [w for w in self.started if w.alive()]

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()


class ResultLog:
    """Subscribes to every result channel and records each final record published, in
    order, per job: a job answered once has exactly one entry (its status only, unless
    ``keep``)."""

    def __init__(self, redis_url: str, keep: bool = True) -> None:
        self.keep = keep
        self._client = redis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(f"{RESULT_KEY_PREFIX}*")
        self.published: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def __enter__(self) -> ResultLog:
        self._pubsub.get_message(timeout=1.0)  # wait for the psubscribe confirmation
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        self._client.close()

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = next_message(self._pubsub, 0.2)
            if message is None or message["type"] != "pmessage":
                continue
            channel = message["channel"].decode()
            meta = json.loads(message["data"])
            if meta.get("status") in FINAL_STATES:
                self.published[channel.removeprefix(RESULT_KEY_PREFIX)].append(
                    meta if self.keep else {"status": meta["status"]}
                )

    def wait_for(self, job_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(job_id in self.published for job_id in job_ids):
                return
            time.sleep(0.05)
        missing = [j for j in job_ids if j not in self.published]
        raise AssertionError(f"{len(missing)} jobs never published a result, e.g. {missing[:5]}")
