"""A submitted job, and waiting for many: ``Job``, ``wait`` and ``as_completed``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

from redis import Redis

from aimass.producer.cancellation import cancel
from aimass.producer.results import JobStatus, decode_result, is_final, status_of
from aimass.producer.streams import TextStream
from aimass.producer.watcher import ResultWatcher
from aimass.protocol.errors import AimassError, JobTimeout
from aimass.protocol.records import ResultRecord
from aimass.protocol.shards import keyspace


class Job:
    """A submitted job: its id, its status, and (when done) its result.

    Any process can re-attach to a job with ``client.job(job_id)``. A job holds the
    client's Redis connection and the lifetime of its results, not the client.
    """

    def __init__(self, redis: Redis, job_id: str, result_ttl_s: int) -> None:
        self.redis = redis
        self.id = job_id
        self.result_ttl_s = result_ttl_s
        self._final: ResultRecord | None = None  # the stored record, once final

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def record(self) -> ResultRecord | None:
        """The record the worker stored (``celery-task-meta-<id>``), if any."""
        if self._final is None:
            record = ResultRecord.decode(
                self.redis.get(keyspace(self.redis).result_key(self.id)), self.id
            )
            if is_final(record):
                self._final = record
            return record
        return self._final

    def status(self) -> JobStatus:
        """queued, started, succeeded, failed, expired, or unknown (never submitted, or
        its records have expired)."""
        record = self.record()
        if record is not None:
            return status_of(record, submitted=True)
        return status_of(
            None, submitted=bool(self.redis.exists(keyspace(self.redis).submitted_key(self.id)))
        )

    def done(self) -> bool:
        return is_final(self.record())

    def result(self, timeout: float | None = None, *, decode: bool = True) -> dict[str, Any]:
        """Wait for the result (pub/sub, no busy loop) and return it; raise the job's
        typed error if it failed, ``JobExpired`` if it expired, ``JobTimeout`` if
        ``timeout`` seconds pass first (``None``: wait as long as it takes)."""
        if self._final is None:
            with ResultWatcher(self.redis) as watcher:
                watcher.watch([self.id])
                finished = watcher.next_finished(timeout)
            if finished is None:
                raise JobTimeout(
                    f"job {self.id} did not finish within {timeout} s (status: {self.status()})"
                )
            self._final = finished[1]
        return decode_result(self.id, self._final, decode=decode)

    def stream(self, timeout: float | None = None) -> TextStream:
        """A sequence job's text as it is made: iterate to get its pieces (``str``); raises
        ``StreamRestarted`` if the job starts again on another worker (iterate on for the
        new run's text), the job's typed error if it fails, ``JobTimeout`` after
        ``timeout`` seconds. See ``aimass.producer.streams``."""
        key = keyspace(self.redis).stream_key(self.id)
        return TextStream(self.redis, self.id, self._final_record, timeout, key)

    def _final_record(self, wait_s: float) -> ResultRecord | None:
        """The job's final record, waiting up to ``wait_s`` seconds for it."""
        if wait_s > 0 and self._final is None:
            with contextlib.suppress(AimassError):  # failed, or not yet: the record says
                self.result(timeout=wait_s, decode=False)
        record = self.record()
        return record if is_final(record) else None

    def cancel(self) -> bool:
        """Cancel the job: a queued job never runs, a job waiting in a worker's batch is
        dropped before the batch starts; its status reads cancelled and ``result()``
        raises ``JobCancelled``. False when it had finished already (nothing changes)."""
        cancelled = cancel(self.redis, self.id, self.result_ttl_s)
        self._final = None
        return cancelled

    def forget(self) -> None:
        """Delete the job's stored result and submission marker; its id then reads
        unknown, and may be submitted again."""
        space = keyspace(self.redis)
        self.redis.delete(space.result_key(self.id), space.submitted_key(self.id))
        self._final = None

    def _deliver(self, record: ResultRecord) -> None:
        """The watcher saw this job's final record."""
        self._final = record


def as_completed(jobs: Sequence[Job], timeout: float | None = None) -> Iterator[Job]:
    """Yield jobs as they finish (succeeded, failed or expired); ``result()`` on a
    yielded job returns (or raises) at once. Raises ``JobTimeout`` when ``timeout``
    seconds pass before all have finished."""
    if not jobs:
        return
    by_id: dict[str, list[Job]] = {}
    for job in jobs:
        by_id.setdefault(job.id, []).append(job)
    deadline = None if timeout is None else time.monotonic() + timeout
    with ResultWatcher(jobs[0].redis) as watcher:
        watcher.watch(by_id)
        while watcher.pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            finished = watcher.next_finished(left)
            if finished is None:
                raise JobTimeout(
                    f"{watcher.pending} of {len(by_id)} jobs did not finish within {timeout} s"
                )
            job_id, record = finished
            for job in by_id[job_id]:
                job._deliver(record)
                yield job


def wait(
    jobs: Sequence[Job], timeout: float | None = None, *, return_exceptions: bool = False
) -> list[Any]:
    """The results of many jobs, in their order, once all have finished.

    Raises the first failed job's typed error (in the jobs' order) unless
    ``return_exceptions``, which puts each error in its job's place instead.
    """
    for _ in as_completed(jobs, timeout):
        pass
    results: list[Any] = []
    for job in jobs:
        try:
            results.append(job.result(timeout=0))
        except AimassError as exc:
            if not return_exceptions:
                raise
            results.append(exc)
    return results
