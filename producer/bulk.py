"""Bulk work: many jobs submitted in few round trips, with a bound on jobs in flight.

``submit_in_chunks`` pushes jobs in script calls of up to ``CHUNK_JOBS`` jobs (or
``CHUNK_BYTES`` of messages). ``BulkRun`` keeps at most ``max_in_flight`` jobs
submitted and unfinished, submits more as results arrive, waits (rather than fails)
while a queue is full, and returns results in input order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from aimass.producer.enqueue import Enqueuer, check_all_accepted
from aimass.producer.progress import Progress
from aimass.producer.results import decode_result
from aimass.producer.submission import Submission
from aimass.producer.watcher import ResultWatcher
from aimass.protocol.errors import AimassError, JobTimeout, QueueFull

if TYPE_CHECKING:
    from redis import Redis

CHUNK_JOBS = 500
CHUNK_BYTES = 4 * 1024 * 1024
# Longest pause between retries while a queue is full and none of ours is in flight.
MAX_BACKOFF_S = 1.0


class BulkQueueFull(QueueFull):
    """A queue filled up part way through a bulk submit; ``job_ids`` were enqueued
    (a prefix of the input: re-attach with ``client.job(job_id)``)."""

    def __init__(self, message: str, job_ids: list[str]) -> None:
        super().__init__(f"{message} ({len(job_ids)} jobs were enqueued before it)")
        self.job_ids = job_ids


def chunks(
    submissions: Iterable[Submission], max_jobs: int = CHUNK_JOBS, max_bytes: int = CHUNK_BYTES
) -> Iterator[list[Submission]]:
    """Consecutive runs of jobs bound for the same list, cut at the size limits."""
    chunk: list[Submission] = []
    size = 0
    for submission in submissions:
        message_size = len(submission.message())
        if chunk and (
            submission.list_name != chunk[0].list_name
            or len(chunk) >= max_jobs
            or size + message_size > max_bytes
        ):
            yield chunk
            chunk, size = [], 0
        chunk.append(submission)
        size += message_size
    if chunk:
        yield chunk


def submit_in_chunks(enqueuer: Enqueuer, submissions: Iterable[Submission]) -> list[str]:
    """Enqueue in order, chunk by chunk; the ids of the jobs (enqueued or duplicates).
    Raises ``BulkQueueFull`` when a chunk is refused."""
    ids: list[str] = []
    for chunk in chunks(submissions):
        pushed = enqueuer.push(chunk)
        ids.extend(s.job_id for s in chunk[: pushed.accepted])
        try:
            check_all_accepted(pushed, chunk, enqueuer.bound)
        except QueueFull as exc:
            raise BulkQueueFull(str(exc), ids) from None
    return ids


class BulkRun:
    """Runs many jobs with at most ``max_in_flight`` submitted and unfinished."""

    def __init__(
        self,
        redis: Redis,
        enqueuer: Enqueuer,
        *,
        max_in_flight: int = 256,
        progress: bool | None = None,
        timeout: float | None = None,
        return_exceptions: bool = False,
        label: str = "jobs",
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.redis = redis
        self.enqueuer = enqueuer
        self.max_in_flight = max_in_flight
        self.progress = progress
        self.timeout = timeout
        self.return_exceptions = return_exceptions
        self.label = label
        self.peak_in_flight = 0  # the most jobs that were in flight at once

    def run(self, submissions: Iterable[Submission], total: int | None = None) -> list[Any]:
        """Results (or, with ``return_exceptions``, errors) in input order."""
        self._source = enumerate(submissions)
        self._held: deque[tuple[int, Submission]] = deque()  # built, refused as full
        self._places: dict[str, list[int]] = {}
        self._results: dict[int, Any] = {}
        self._deadline = None if self.timeout is None else time.monotonic() + self.timeout
        self._backoff = 0.05
        with (
            ResultWatcher(self.redis) as self._watcher,
            Progress(total, label=self.label, enabled=self.progress) as self._bar,
        ):
            while True:
                full = self._submit_more()
                if not self._watcher.pending and not full:
                    break
                self._collect(full)
        return [self._results[index] for index in range(len(self._results))]

    def _submit_more(self) -> bool:
        """Submit until the bound is reached or the input ends; True if a queue is full."""
        while (room := self.max_in_flight - self._watcher.pending) > 0:
            batch = self._take(min(room, CHUNK_JOBS))
            if not batch:
                return False
            for chunk in chunks(s for _, s in batch):
                accepted = self.enqueuer.push(chunk).accepted
                self._watch(chunk[:accepted], batch)
                if accepted < len(chunk):
                    self._hold(batch, chunk[accepted])
                    return True
            self._backoff = 0.05
        return False

    def _take(self, count: int) -> list[tuple[int, Submission]]:
        batch = [self._held.popleft() for _ in range(min(count, len(self._held)))]
        batch.extend(islice(self._source, count - len(batch)))
        return batch

    def _hold(self, batch: list[tuple[int, Submission]], refused: Submission) -> None:
        """Keep the refused chunk and everything after it for the next try, in order."""
        start = next(i for i, (_, s) in enumerate(batch) if s is refused)
        self._held.extendleft(reversed(batch[start:]))

    def _watch(self, chunk: list[Submission], batch: list[tuple[int, Submission]]) -> None:
        index_of = {id(s): index for index, s in batch}
        for submission in chunk:
            self._places.setdefault(submission.job_id, []).append(index_of[id(submission)])
        self._watcher.watch(s.job_id for s in chunk)
        self.peak_in_flight = max(self.peak_in_flight, self._watcher.pending)

    def _collect(self, queue_full: bool) -> None:
        """Wait for the next finished job (briefly, when a full queue needs a retry)."""
        wait = self._left()
        if queue_full:
            wait = min(self._backoff, wait) if wait is not None else self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            if not self._watcher.pending:
                time.sleep(wait)
                self._check_deadline()
                return
        finished = self._watcher.next_finished(wait)
        if finished is None:
            self._check_deadline()
            return
        job_id, record = finished
        failed = 0
        places = self._places.pop(job_id)
        for index in places:
            try:
                self._results[index] = decode_result(job_id, record)
            except AimassError as exc:
                if not self.return_exceptions:
                    raise
                self._results[index] = exc
                failed += 1
        self._bar.advance(len(places), failed=failed)

    def _left(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise JobTimeout(
                f"bulk run did not finish within {self.timeout} s: {len(self._results)} "
                f"results in, {self._watcher.pending} jobs still in flight"
            )
