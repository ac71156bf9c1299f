"""Dynamic batching: jobs wait in a local queue; one thread runs them in batches.

A batch runs when it holds ``max_batch_size`` inputs, or when its oldest job has waited
``max_queue_delay`` (a deadline per job, not a repeating timer). The thread that runs
the model touches the network once per batch, and only when told to (``on_start``): to
record, before the run, that the batch's jobs are running, for a run that kills the
process must be on record before it starts (worker/consumer.py parks such jobs). The
threads that take messages only feed it.

A batch that runs longer than the time limit fails its jobs (``ModelError``) and its run
is asked to stop; if it has still not returned at twice the limit, its thread is left to
it and a new thread serves the model (docs/reliability.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Container, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from aimass.protocol.errors import AimassError, JobCancelled, ModelError
from aimass.worker.handoffs import record_start, resolve_future
from aimass.worker.runs import Feeds, Runner, run_by_shape
from aimass.worker.sessions import DeviceHealth

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchOutput:
    """What one job gets back: its slice of each output, and where its time went."""

    outputs: list[np.ndarray]
    queue_ms: float
    inference_ms: float
    batch_size: int
    run_size: int  # the batch size the model ran at: its bucket, padding included


@dataclass(eq=False)
class Pending:
    """One job waiting for a batch: its inputs (leading dimension ``size``)."""

    feeds: Feeds
    size: int
    arrived: float  # time.monotonic() when the job reached this worker
    enqueued: float = 0.0  # when it joined the local queue; its batch deadline counts from here
    future: Future[BatchOutput] = field(default_factory=Future)
    job_id: str | None = None
    alone: bool = False  # runs in a batch of its own (a worker died running it before)


class DeviceLost(Exception):
    """The device's context broke (a sticky CUDA error) in or before this job's batch.
    Not a job's failure: the job is left unacknowledged, to be run again by another
    worker, and this process exits so that it is started afresh."""


class _Stop:
    """Put on the queue to end the batch thread after the jobs ahead of it."""


STOP = _Stop()


def never_idle() -> bool:
    return False


class Inbox:
    """A batcher's queue of jobs. It wakes the batch thread only when there is something
    for it to do: a first job, enough inputs to fill its batch, a stop, or a ``poke``
    (the feeder went idle). Not one wake-up per job: on a busy worker each one costs the
    feeding thread a switch of the interpreter lock."""

    def __init__(self) -> None:
        self._items: deque[Pending | _Stop] = deque()
        self._inputs = 0  # inputs of the queued jobs
        self._need = 0  # inputs the waiting batch thread needs; 0: it is not waiting
        self._stops = 0
        self._poked = False
        self._cond = threading.Condition(threading.Lock())

    def put(self, item: Pending | _Stop) -> None:
        with self._cond:
            self._items.append(item)
            if isinstance(item, _Stop):
                self._stops += 1
                self._cond.notify()
                return
            self._inputs += item.size
            if self._need and self._inputs >= self._need:
                self._cond.notify()

    def poke(self) -> None:
        """Make a waiting batch thread look again whether the feeder is idle."""
        with self._cond:
            self._poked = True
            self._cond.notify()

    def take(self) -> Pending | _Stop | None:
        """The oldest queued item, or ``None`` when there is none."""
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            if isinstance(item, _Stop):
                self._stops -= 1
            else:
                self._inputs -= item.size
            return item

    def push_back(self, item: Pending | _Stop) -> None:
        """Return an item to the front (a stop seen while filling a batch)."""
        with self._cond:
            self._items.appendleft(item)
            if isinstance(item, _Stop):
                self._stops += 1
            else:
                self._inputs += item.size

    def wait(self, inputs: int, timeout: float | None) -> None:
        """Wait until ``inputs`` inputs are queued, a stop is, a poke comes, or
        ``timeout`` seconds pass."""
        with self._cond:
            self._need = inputs
            try:
                self._cond.wait_for(
                    lambda: self._poked or self._inputs >= inputs or self._stops > 0, timeout
                )
            finally:
                self._need = 0
                self._poked = False

    def __len__(self) -> int:
        return len(self._items)


def collect_batch(
    jobs: Inbox,
    max_batch_size: int,
    max_delay_s: float,
    clock: Callable[[], float] = time.monotonic,
    idle: Callable[[], bool] = never_idle,
) -> list[Pending] | None:
    """Wait for a first job, then take more until the batch holds ``max_batch_size``
    inputs or the first job's deadline (its enqueue time plus ``max_delay_s``) passes.

    ``idle`` lets the feeder say that no more jobs are on their way (the Redis queues
    came back empty and nothing taken is still being decoded): then the batch runs at
    once with what it has, instead of waiting out a deadline that nothing will beat.
    The feeder pokes the inbox when it goes idle.

    Returns ``None`` when told to stop and no job is waiting before the stop.
    """
    first = jobs.take()
    while first is None:
        jobs.wait(1, None)
        first = jobs.take()
    if isinstance(first, _Stop):
        return None
    batch = [first]
    size = first.size
    deadline = first.enqueued + max_delay_s
    while size < max_batch_size and not first.alone:
        job = jobs.take()
        if job is None:
            left = deadline - clock()
            if left <= 0 or idle():
                break
            jobs.wait(max_batch_size - size, left)
            continue
        if isinstance(job, _Stop) or job.alone:
            jobs.push_back(job)  # a stop, or a job to run alone: after this batch
            break
        batch.append(job)
        size += job.size
    return batch


@dataclass(eq=False)
class _Running:
    """The batch a batcher thread is running, as the time-limit watchdog sees it."""

    batch: list[Pending]
    started: float
    thread: threading.Thread
    timed_out: bool = False
    abandoned: bool = False


class Batcher:
    """One model's batch loop on its own thread.

    ``time_limit_s`` (0: none) bounds the run of one batch; ``interrupt(thread)`` asks
    the run on that thread to stop (ONNX Runtime's ``RunOptions.terminate``).
    ``buckets`` (sorted, the largest ``max_batch_size``): pad each run up to the smallest
    of these sizes that holds it (worker/buckets.py); empty: run exact sizes.
    ``on_batch(inputs, run_size, inference_ms)`` is told of each batch that ran.
    ``device`` counts the runs that failed with a CUDA error: once it finds the context
    broken, no batch runs any more and every job gets ``DeviceLost``.
    """

    def __init__(
        self,
        name: str,
        runner: Runner,
        max_batch_size: int,
        max_delay_ms: float,
        on_batch: Callable[[int, int, float], None] | None = None,
        idle: Callable[[], bool] = never_idle,
        time_limit_s: float = 0.0,
        interrupt: Callable[[threading.Thread], None] | None = None,
        buckets: Sequence[int] = (),
        cancelled: Container[str] = (),
        on_start: Callable[[list[str]], None] | None = None,
        device: DeviceHealth | None = None,
        on_device_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.buckets = tuple(buckets)
        self.cancelled = cancelled  # job ids a producer cancelled: dropped before a run
        self.on_start = on_start  # told the job ids of each batch about to run
        self.device = device  # the process's device, as its runs find it
        self.on_device_lost = on_device_lost  # told once the device is found broken
        self.max_delay_s = max_delay_ms / 1000.0
        self.on_batch = on_batch
        self.idle = idle
        self.time_limit_s = time_limit_s
        self.interrupt = interrupt
        self.abandoned_threads = 0
        self._jobs = Inbox()
        self._stopped = False
        self._running: _Running | None = None
        self._closed = threading.Event()
        self._thread = self._start_thread()
        if time_limit_s > 0:
            threading.Thread(
                target=self._watch, name=f"batcher-{name}-watchdog", daemon=True
            ).start()

    def _start_thread(self) -> threading.Thread:
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.name}", daemon=True)
        self._thread.start()
        return self._thread

    def submit(
        self,
        feeds: Feeds,
        size: int,
        arrived: float,
        job_id: str | None = None,
        alone: bool = False,
    ) -> Future[BatchOutput]:
        """Queue one job's inputs; the future resolves when its batch has run."""
        if self._stopped:
            raise ModelError(f"model {self.name!r} was unloaded; send the job again")
        job = Pending(
            feeds=feeds,
            size=size,
            arrived=arrived,
            enqueued=time.monotonic(),
            job_id=job_id,
            alone=alone,
        )
        self._jobs.put(job)
        return job.future

    def alive(self) -> bool:
        """The thread serving the model is there (a liveness probe asks)."""
        return self._thread.is_alive()

    def poke(self) -> None:
        """The feeder went idle: a partial batch that waits for more need not."""
        self._jobs.poke()

    def stop(self, timeout: float | None = None) -> None:
        """Run what is queued, then end the thread."""
        self._stopped = True
        self._closed.set()
        self._jobs.put(STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        me = threading.current_thread()
        # An abandoned thread ends when (if ever) its stuck run returns.
        while me is self._thread and (
            batch := collect_batch(
                self._jobs, self.max_batch_size, self.max_delay_s, idle=self.idle
            )
        ):
            self._run(batch)

    def _run(self, batch: list[Pending]) -> None:
        batch = self._drop_cancelled(batch)
        if not batch:
            return
        if self.device is not None and self.device.broken is not None:
            log.warning("%d jobs of %s not run: the device is broken", len(batch), self.name)
            self._device_lost(batch, self.device.broken)
            return
        self._starting(batch)
        started = time.monotonic()
        running = self._running = _Running(batch, started, threading.current_thread())
        try:
            parts, run_size = run_by_shape(
                self.runner, [job.feeds for job in batch], self.max_batch_size, self.buckets
            )
        except Exception as exc:
            if self.device is not None and self.device.failed(exc):
                log.critical(
                    "a batch of %d jobs on %s broke the device (%s: %s): its jobs "
                    "are left to run again elsewhere",
                    len(batch),
                    self.name,
                    type(exc).__name__,
                    exc,
                )
                self._device_lost(batch, str(self.device.broken))
            elif not running.timed_out:  # else its jobs have failed already
                self._fail(batch, exc)
            return
        finally:
            if self._running is running:
                self._running = None
        if running.timed_out:
            log.warning(
                "a batch of %d jobs on %s returned after %.1f s, past its time limit; "
                "its jobs had failed already",
                len(batch),
                self.name,
                time.monotonic() - started,
            )
            return
        if self.device is not None:
            self.device.succeeded()
        inference_ms = (time.monotonic() - started) * 1000.0
        size = sum(job.size for job in batch)
        if self.on_batch:
            self.on_batch(size, run_size, inference_ms)
        for job, part in zip(batch, parts, strict=True):
            resolve_future(
                job.future,
                BatchOutput(
                    outputs=part,
                    queue_ms=(started - job.arrived) * 1000.0,
                    inference_ms=inference_ms,
                    batch_size=size,
                    run_size=run_size,
                ),
            )

    def _starting(self, batch: list[Pending]) -> None:
        """Tell ``on_start`` of the batch before it runs: should the process die in the
        run, the record of it must already be out. Best effort: a failure to tell is
        logged, and the batch runs."""
        if self.on_start is not None:
            ids = [job.job_id for job in batch if job.job_id is not None]
            record_start(self.on_start, ids, f"a batch of {len(ids)} jobs")

    def _drop_cancelled(self, batch: list[Pending]) -> list[Pending]:
        """Jobs cancelled while they waited for this batch do not run."""
        if not self.cancelled:
            return batch
        kept = []
        for job in batch:
            if job.job_id is not None and job.job_id in self.cancelled:
                resolve_future(job.future, error=JobCancelled(f"job {job.job_id} was cancelled"))
            else:
                kept.append(job)
        return kept

    def _fail(self, batch: list[Pending], exc: Exception) -> None:
        error = (
            exc
            if isinstance(exc, AimassError)
            else ModelError(
                f"model {self.name!r} failed on a batch of {len(batch)} jobs: "
                f"{type(exc).__name__}: {exc}"
            )
        )
        log.error("batch of %d jobs failed on %s: %s", len(batch), self.name, exc)
        for job in batch:
            resolve_future(job.future, error=error)

    def _device_lost(self, batch: list[Pending], reason: str) -> None:
        for job in batch:
            resolve_future(job.future, error=DeviceLost(reason))
        if self.on_device_lost is not None:
            self.on_device_lost(reason)

    # The time limit: a watchdog thread per batcher, when there is a limit.

    def _watch(self) -> None:
        tick = min(1.0, max(0.02, self.time_limit_s / 10))
        while not self._closed.wait(tick):
            running = self._running
            if running is None:
                continue
            elapsed = time.monotonic() - running.started
            if not running.timed_out and elapsed >= self.time_limit_s:
                self._time_out(running)
            elif not running.abandoned and elapsed >= 2 * self.time_limit_s:
                self._abandon(running)

    def _time_out(self, running: _Running) -> None:
        """Soft limit: fail the batch's jobs now, and ask its run to stop."""
        running.timed_out = True
        error = ModelError(
            f"model {self.name!r} timed out after {self.time_limit_s:g} s on a batch of "
            f"{len(running.batch)} jobs (the worker's AIMASS_JOB_TIME_LIMIT_S)"
        )
        log.error(
            "batch of %d jobs on %s timed out after %g s; interrupting its run",
            len(running.batch),
            self.name,
            self.time_limit_s,
        )
        for job in running.batch:
            resolve_future(job.future, error=error)
        if self.interrupt is not None:
            self.interrupt(running.thread)

    def _abandon(self, running: _Running) -> None:
        """Hard limit: the run ignored the interrupt. Leave it to its thread and serve the
        model's queue on a new one."""
        running.abandoned = True
        self.abandoned_threads += 1
        if self._running is running:
            self._running = None
        log.error(
            "the run on %s ignored the interrupt and is still going after %g s: "
            "leaving it to its thread (%d abandoned so far) and serving the model on "
            "a new one",
            self.name,
            2 * self.time_limit_s,
            self.abandoned_threads,
        )
        if not self._stopped:
            self._start_thread()
