"""The batcher's time limit: a batch that runs too long fails its jobs, its run is
interrupted, and a run that ignores the interrupt is left to its own thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from aimass.protocol.errors import ModelError
from aimass.worker.batcher import Batcher

pytestmark = pytest.mark.unit


def feeds(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 2), value, np.float32)}


class Hangs:
    """A runner that hangs on inputs of -1 until released: by ``interrupt`` when
    ``obeys``, else only by ``release``."""

    def __init__(self, obeys: bool) -> None:
        self.obeys = obeys
        self.interrupted: list[threading.Thread] = []
        self._release = threading.Event()

    def __call__(self, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
        if (batch["x"] == -1).any():
            self._release.wait(30)
            raise RuntimeError("stopped")
        return [batch["x"] * 2]

    def interrupt(self, thread: threading.Thread) -> None:
        self.interrupted.append(thread)
        if self.obeys:
            self._release.set()

    def release(self) -> None:
        self._release.set()


def test_a_batch_past_the_limit_fails_and_its_run_is_interrupted() -> None:
    runner = Hangs(obeys=True)
    batcher = Batcher(
        "m", runner, max_batch_size=1, max_delay_ms=0, time_limit_s=0.2, interrupt=runner.interrupt
    )
    try:
        started = time.monotonic()
        stuck = batcher.submit(feeds(-1), 1, arrived=started)
        with pytest.raises(ModelError, match=r"model 'm' timed out after 0.2 s"):
            stuck.result(timeout=5)
        assert 0.2 <= time.monotonic() - started < 2
        assert runner.interrupted == [batcher._thread]
        # The interrupted run returned: the same thread serves the next job.
        assert batcher.submit(feeds(3), 1, time.monotonic()).result(timeout=5).outputs[0][0][0] == 6
        assert batcher.abandoned_threads == 0
    finally:
        batcher.stop(timeout=5)


def test_a_run_that_ignores_the_interrupt_is_abandoned_and_a_new_thread_serves() -> None:
    runner = Hangs(obeys=False)
    batcher = Batcher(
        "m", runner, max_batch_size=1, max_delay_ms=0, time_limit_s=0.2, interrupt=runner.interrupt
    )
    try:
        first_thread = batcher._thread
        stuck = batcher.submit(feeds(-1), 1, time.monotonic())
        waiting = batcher.submit(feeds(4), 1, time.monotonic())  # queued behind it
        with pytest.raises(ModelError, match="timed out"):
            stuck.result(timeout=5)
        # At twice the limit, a new thread takes over and runs the job that waited.
        assert waiting.result(timeout=5).outputs[0][0][0] == 8
        assert batcher.abandoned_threads == 1
        assert batcher._thread is not first_thread and first_thread.is_alive()
        runner.release()  # the stuck run ends at last: its thread ends, nothing is resolved
        first_thread.join(5)
        assert not first_thread.is_alive()
        assert batcher.submit(feeds(1), 1, time.monotonic()).result(timeout=5).outputs[0][0][0] == 2
    finally:
        runner.release()
        batcher.stop(timeout=5)


def test_without_a_limit_nothing_watches() -> None:
    runner = Hangs(obeys=True)
    batcher = Batcher("unwatched", runner, max_batch_size=4, max_delay_ms=0)
    try:
        # The batch thread only (counting all threads is racy: other tests' end late).
        names = [t.name for t in threading.enumerate() if "unwatched" in t.name]
        assert names == ["batcher-unwatched"]
        assert batcher.submit(feeds(1), 1, time.monotonic()).result(timeout=5).outputs[0][0][0] == 2
    finally:
        batcher.stop(timeout=5)
