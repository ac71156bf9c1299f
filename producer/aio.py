"""The asyncio flavour of the client, on ``redis.asyncio``, for async services.

>>> async with AsyncClient("redis://localhost:6379/0") as client:
...     job = await client.classify("seven.png", model="digits")
...     result = await job.result(timeout=10)

The same jobs, keys and results as ``aimass.producer.client``: a job submitted by one can be
read by the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from aimass.producer.cancellation import CANCEL_SCRIPT, cancel_call
from aimass.producer.enqueue import (
    ENQUEUE_SCRIPT,
    EnqueueCall,
    Pushed,
    check_all_accepted,
)
from aimass.producer.results import JobStatus, decode_result, is_final, status_of
from aimass.producer.streams import AsyncTextStream
from aimass.producer.submission import Deadline, Submission
from aimass.producer.watcher import (
    CHUNK,
    RECONNECT_S,
    REFRESH_S,
    Watchlist,
    in_chunks,
    job_id_of,
)
from aimass.protocol.codecs import InputLike
from aimass.protocol.connections import connect_async
from aimass.protocol.contract import Priority
from aimass.protocol.errors import AimassError, JobTimeout
from aimass.protocol.keys import PLAIN
from aimass.protocol.records import ResultRecord
from aimass.protocol.settings import DEFAULT_MAX_QUEUE_DEPTH, DEFAULT_REDIS_URL, ClientSettings
from aimass.protocol.shards import (
    keyspace_async,
    mget_async,
    next_published_async,
    subscribe_async,
    unsubscribe_async,
)
from aimass.protocol.tensors import TensorInputs


class AsyncClient:
    """Submits jobs and awaits their results without blocking the event loop."""

    def __init__(
        self,
        url: str = DEFAULT_REDIS_URL,
        *,
        max_queue_depth: int = DEFAULT_MAX_QUEUE_DEPTH,
        result_ttl_s: int | None = None,
        queue_shards: int = 0,
    ) -> None:
        self.settings = ClientSettings.for_url(url, max_queue_depth, result_ttl_s, queue_shards)
        self.redis = connect_async(url)
        self._script = self.redis.register_script(ENQUEUE_SCRIPT)

    @classmethod
    def from_env(cls) -> AsyncClient:
        """A client configured like ``Client.from_env()``."""
        settings = ClientSettings.from_env()
        return cls(
            settings.redis_url,
            max_queue_depth=settings.max_queue_depth,
            result_ttl_s=settings.result_ttl_s,
            queue_shards=settings.queue_shards,
        )

    async def close(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def classify(
        self,
        inputs: InputLike | Sequence[InputLike],
        *,
        model: str,
        version: int | None = None,
        top_k: int = 5,
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
    ) -> AsyncJob:
        """Classify images (see ``Client.classify``)."""
        return await self.submit(
            Submission.classify(
                inputs,
                model=model,
                version=version,
                top_k=top_k,
                job_id=job_id,
                priority=priority,
                deadline=deadline,
            )
        )

    async def generate(
        self,
        *,
        model: str,
        count: int = 1,
        labels: Sequence[int] | None = None,
        seed: int | None = None,
        format: str = "png",
        version: int | None = None,
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
        conditions: Sequence[Sequence[float]] | None = None,
    ) -> AsyncJob:
        """Generate images (see ``Client.generate``)."""
        return await self.submit(
            Submission.generate(
                model=model,
                count=count,
                labels=labels,
                seed=seed,
                format=format,
                version=version,
                job_id=job_id,
                priority=priority,
                deadline=deadline,
                conditions=conditions,
            )
        )

    async def infer(
        self,
        model: str,
        inputs: TensorInputs,
        *,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
        parameters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        version: int | None = None,
        job_id: str | None = None,
        priority: int = Priority.normal,
        deadline: Deadline | None = None,
    ) -> AsyncJob:
        """Run a model on named tensors (see ``Client.infer``)."""
        return await self.submit(
            Submission.infer(
                inputs,
                model=model,
                outputs=outputs,
                binary=binary,
                parameters=parameters,
                request_id=request_id,
                version=version,
                job_id=job_id,
                priority=priority,
                deadline=deadline,
            )
        )

    async def sequence(self, prompt: str, *, model: str, **options: Any) -> AsyncJob:
        """Ask a sequence model for the text after ``prompt`` (see ``Client.sequence``)."""
        return await self.submit(Submission.sequence(prompt, model=model, **options))

    async def submit(self, submission: Submission) -> AsyncJob:
        """Enqueue one job: idempotent on its id, ``QueueFull`` at the bound."""
        space = await keyspace_async(self.redis, self.settings.queue_shards)
        bound = self.settings.max_queue_depth
        call = EnqueueCall.of([submission], bound, self.settings.result_ttl_s, space)
        pushed = Pushed.of(await self._script(keys=call.keys, args=call.args))
        check_all_accepted(pushed, [submission], self.settings.max_queue_depth)
        return self.job(submission.job_id)

    def job(self, job_id: str) -> AsyncJob:
        """Re-attach to a job by its id."""
        return AsyncJob(self.redis, job_id, self.settings.result_ttl_s)

    async def wait(
        self,
        jobs: Sequence[AsyncJob],
        timeout: float | None = None,
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Results of many jobs in their order (see ``aimass.producer.job.wait``)."""
        async for _ in self.as_completed(jobs, timeout):
            pass
        results: list[Any] = []
        for job in jobs:
            try:
                results.append(await job.result(timeout=0))
            except AimassError as exc:
                if not return_exceptions:
                    raise
                results.append(exc)
        return results

    async def as_completed(
        self, jobs: Sequence[AsyncJob], timeout: float | None = None
    ) -> AsyncIterator[AsyncJob]:
        """Jobs as they finish; raises ``JobTimeout`` when ``timeout`` passes first."""
        by_id: dict[str, list[AsyncJob]] = {}
        for job in jobs:
            by_id.setdefault(job.id, []).append(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        async with AsyncResultWatcher(self.redis) as watcher:
            await watcher.watch(by_id)
            while watcher.pending:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                finished = await watcher.next_finished(left)
                if finished is None:
                    raise JobTimeout(
                        f"{watcher.pending} of {len(by_id)} jobs did not finish within {timeout} s"
                    )
                for job in by_id[finished[0]]:
                    job._final = finished[1]
                    yield job


class AsyncJob:
    """A submitted job, awaited: ``await job.status()``, ``await job.result()``."""

    def __init__(self, redis: aioredis.Redis, job_id: str, result_ttl_s: int) -> None:
        self.redis = redis
        self.id = job_id
        self.result_ttl_s = result_ttl_s
        self._final: ResultRecord | None = None

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def record(self) -> ResultRecord | None:
        """The record the worker stored, if any (see ``Job.record``)."""
        if self._final is not None:
            return self._final
        record = ResultRecord.decode(await self.redis.get(await self._key(self.id)), self.id)
        if is_final(record):
            self._final = record
        return record

    async def _key(self, job_id: str) -> str:
        return (await keyspace_async(self.redis)).result_key(job_id)

    async def status(self) -> JobStatus:
        record = await self.record()
        if record is not None:
            return status_of(record, submitted=True)
        space = await keyspace_async(self.redis)
        submitted = bool(await self.redis.exists(space.submitted_key(self.id)))
        return status_of(None, submitted=submitted)

    async def result(self, timeout: float | None = None, *, decode: bool = True) -> dict[str, Any]:
        """Await the result (see ``Job.result``)."""
        if self._final is None:
            async with AsyncResultWatcher(self.redis) as watcher:
                await watcher.watch([self.id])
                finished = await watcher.next_finished(timeout)
            if finished is None:
                raise JobTimeout(
                    f"job {self.id} did not finish within {timeout} s "
                    f"(status: {await self.status()})"
                )
            self._final = finished[1]
        return decode_result(self.id, self._final, decode=decode)

    def stream(self, timeout: float | None = None) -> AsyncTextStream:
        """A sequence job's text as it is made: ``async for piece in job.stream()``
        (see ``Job.stream``)."""
        return AsyncTextStream(self.redis, self.id, self._final_record, timeout)

    async def _final_record(self, wait_s: float) -> ResultRecord | None:
        if wait_s > 0 and self._final is None:
            with contextlib.suppress(AimassError):  # failed, or not yet: the record says
                await self.result(timeout=wait_s, decode=False)
        record = await self.record()
        return record if is_final(record) else None

    async def cancel(self) -> bool:
        """Cancel the job (see ``Job.cancel``)."""
        keys, args = cancel_call(self.id, self.result_ttl_s, await keyspace_async(self.redis))
        cancelled = bool(await self.redis.eval(CANCEL_SCRIPT, len(keys), *keys, *args))
        self._final = None
        return cancelled

    async def forget(self) -> None:
        space = await keyspace_async(self.redis)
        await self.redis.delete(space.result_key(self.id), space.submitted_key(self.id))
        self._final = None


class AsyncResultWatcher:
    """``aimass.producer.watcher.ResultWatcher`` for asyncio."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._space = PLAIN  # the client's, once known (watch)
        self._list = Watchlist()

    async def __aenter__(self) -> AsyncResultWatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pubsub.aclose()

    @property
    def pending(self) -> int:
        return self._list.outstanding

    async def watch(self, job_ids: Iterable[str]) -> None:
        self._space = self._list.space = await keyspace_async(self._redis)
        fresh = self._list.add(job_ids)
        self._list.unsubscribed.extend(fresh)
        try:
            await self._subscribe()
            await self._refresh(fresh)
        except aioredis.ConnectionError:  # see ResultWatcher.watch
            self._list.last_refresh = 0.0

    async def _subscribe(self) -> None:
        waiting = self._list.unsubscribed
        while waiting:
            chunk = waiting[:CHUNK]
            channels = [self._space.result_key(job_id) for job_id in chunk]
            await subscribe_async(self._pubsub, self._space, channels)
            del waiting[: len(chunk)]

    async def next_finished(self, timeout: float | None) -> tuple[str, ResultRecord] | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (left := self._list.time_to_wait(deadline)) is not None:
            try:
                await self._step(left)
            except aioredis.ConnectionError:
                await asyncio.sleep(min(RECONNECT_S, left))
                self._list.lost_redis()
                if self._space.sharded:  # see ResultWatcher._reroute
                    try:
                        await self._refresh(list(self._list.pending))
                    except aioredis.RedisError:
                        self._list.lost_redis()
        return self._list.next_finished()

    async def _step(self, left: float) -> None:
        await self._subscribe()
        if leave := self._list.channels_to_leave():
            await unsubscribe_async(self._pubsub, self._space, leave)
        message = await next_published_async(self._pubsub, self._space, min(REFRESH_S, left))
        if message is not None:
            job_id = job_id_of(message, self._space)
            await self._note(job_id, ResultRecord.decode(message["data"], job_id))
        elif self._list.refresh_due():
            await self._refresh(list(self._list.pending))

    async def _refresh(self, job_ids: list[str]) -> None:
        self._list.last_refresh = time.monotonic()
        for chunk in in_chunks(job_ids):
            keys = [self._space.result_key(job_id) for job_id in chunk]
            values = await mget_async(self._redis, self._space, keys)
            for job_id, raw in zip(chunk, values, strict=True):
                await self._note(job_id, ResultRecord.decode(raw, job_id))

    async def _note(self, job_id: str, record: ResultRecord | None) -> None:
        self._list.note(job_id, record)
