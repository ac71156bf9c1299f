"""Dynamic batching: jobs wait in a local queue; one thread runs them in batches.

A batch runs when it holds ``max_batch_size`` inputs, or when its oldest job has waited
``max_queue_delay`` (a deadline per job, not a repeating timer). The thread that runs
the model never touches the network; the threads that take messages only feed it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from producer.errors import AimassError, ModelError

log = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray]
Runner = Callable[[Feeds], list[np.ndarray]]


@dataclass(frozen=True)
class BatchOutput:
    """What one job gets back: its slice of each output, and where its time went."""

    outputs: list[np.ndarray]
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass(eq=False)
class Pending:
    """One job waiting for a batch: its inputs (leading dimension ``size``)."""

    feeds: Feeds
    size: int
    arrived: float  # time.monotonic() when the job reached this worker
    enqueued: float = 0.0  # when it joined the local queue; its batch deadline counts from here
    future: Future[BatchOutput] = field(default_factory=Future)


class _Stop:
    """Put on the queue to end the batch thread after the jobs ahead of it."""


STOP = _Stop()


def collect_batch(
    jobs: queue.Queue[Pending | _Stop],
    max_batch_size: int,
    max_delay_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[Pending] | None:
    """Wait for a first job, then take more until the batch holds ``max_batch_size``
    inputs or the first job's deadline (its enqueue time plus ``max_delay_s``) passes.

    Returns ``None`` when told to stop and no job is waiting before the stop.
    """
    first = jobs.get()
    if isinstance(first, _Stop):
        return None
    batch = [first]
    size = first.size
    deadline = first.enqueued + max_delay_s
    while size < max_batch_size:
        try:
            job = jobs.get(timeout=max(0.0, deadline - clock()))
        except queue.Empty:
            break
        if isinstance(job, _Stop):
            jobs.put(job)  # stop after this batch
            break
        batch.append(job)
        size += job.size
    return batch


class Batcher:
    """One model's batch loop on its own thread."""

    def __init__(self, name: str, runner: Runner, max_batch_size: int, max_delay_ms: float,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.name = name
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_ms / 1000.0
        self.on_batch = on_batch
        self._jobs: queue.Queue[Pending | _Stop] = queue.Queue()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, feeds: Feeds, size: int, arrived: float) -> Future[BatchOutput]:
        """Queue one job's inputs; the future resolves when its batch has run."""
        if self._stopped:
            raise ModelError(f"model {self.name!r} was unloaded; send the job again")
        job = Pending(feeds=feeds, size=size, arrived=arrived, enqueued=time.monotonic())
        self._jobs.put(job)
        return job.future

    def stop(self, timeout: float | None = None) -> None:
        """Run what is queued, then end the thread."""
        self._stopped = True
        self._jobs.put(STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (batch := collect_batch(self._jobs, self.max_batch_size, self.max_delay_s)):
            self._run(batch)

    def _run(self, batch: list[Pending]) -> None:
        started = time.monotonic()
        try:
            outputs = run_in_chunks(self.runner, [job.feeds for job in batch],
                                    self.max_batch_size)
        except Exception as exc:
            error = exc if isinstance(exc, AimassError) else ModelError(
                f"model {self.name!r} failed on a batch of {len(batch)} jobs: "
                f"{type(exc).__name__}: {exc}")
            log.error("batch of %d jobs failed on %s: %s", len(batch), self.name, exc)
            for job in batch:
                job.future.set_exception(error)
            return
        inference_ms = (time.monotonic() - started) * 1000.0
        size = sum(job.size for job in batch)
        if self.on_batch:
            self.on_batch(size, inference_ms)
        offset = 0
        for job in batch:
            part = [out[offset:offset + job.size] for out in outputs]
            offset += job.size
            job.future.set_result(BatchOutput(
                outputs=part,
                queue_ms=(started - job.arrived) * 1000.0,
                inference_ms=inference_ms,
                batch_size=size,
            ))


def run_in_chunks(runner: Runner, feeds: list[Feeds], max_batch_size: int) -> list[np.ndarray]:
    """Concatenate the jobs' inputs, run them at most ``max_batch_size`` at a time, and
    return each output concatenated back in job order."""
    names = list(feeds[0])
    joined = {name: np.concatenate([f[name] for f in feeds]) for name in names}
    total = len(joined[names[0]])
    if total <= max_batch_size:
        return runner(joined)
    parts: list[list[np.ndarray]] = []
    for start in range(0, total, max_batch_size):
        parts.append(runner({n: a[start:start + max_batch_size] for n, a in joined.items()}))
    return [np.concatenate(outs) for outs in zip(*parts, strict=True)]
