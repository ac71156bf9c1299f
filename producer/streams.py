"""Reading a sequence job's text as it is made: ``job.stream()`` (and ``async for`` over
``AsyncJob.stream()``) yield the pieces of text from the job's Redis stream
(``aimass:stream:<id>``, aimass/protocol/streams.py), reading with XREAD from the last
entry seen, so that nothing is lost or repeated between pieces.

Should the job's worker die while it decodes, another worker runs the job again from its
start, and the stream says so: the iterator raises ``StreamRestarted``, and the pieces
it yields after that are the new run's text from its beginning. The iterator keeps its
place: iterate it again to read on.

    stream = job.stream()
    while True:
        try:
            for piece in stream:
                print(piece, end="")
            break
        except StreamRestarted:
            print("\\n[the job started again]")

A job that did not ask to stream (or whose stream expired) still ends the iteration:
when the stream stays quiet and the job's result is stored, the text not yet read comes
from the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from aimass.producer.results import decode_result
from aimass.protocol.errors import JobTimeout, error_from_result
from aimass.protocol.keys import stream_key
from aimass.protocol.records import ResultRecord
from aimass.protocol.shards import keyspace_async
from aimass.protocol.streams import StreamEntry, StreamEvent

# How long one XREAD waits for an entry before the job's record is looked at.
BLOCK_MS = 1000
# Entries read at most per XREAD.
COUNT = 512


class StreamRestarted(Exception):
    """The job began again from its start (its worker died while decoding it); the text
    read so far is void, and the stream's next pieces are the new run's text from its
    beginning. ``run``: the job's run that starts (2 for the first restart; 0 when the
    result, not the stream, showed that the text changed)."""

    def __init__(self, job_id: str, run: int) -> None:
        super().__init__(f"job {job_id} started again from its beginning (run {run})")
        self.job_id = job_id
        self.run = run


class StreamCursor:
    """Where a reader is in a job's stream, and the text of the current run: the part of
    reading a stream that does no IO, shared by the sync and asyncio iterators."""

    def __init__(self, job_id: str, key: str | None = None) -> None:
        self.job_id = job_id
        self.key = key or stream_key(job_id)  # on a cluster, KeySpace.stream_key
        self.last_id = "0-0"
        self.text = ""  # the current run's text read so far
        self.ended: StreamEntry | None = None  # the end or error entry, once read
        self.done = False  # nothing more to yield
        self.pending: list[str | StreamRestarted] = []

    def take(self, reply: Sequence[Any]) -> None:
        """Read an XREAD reply: queue its pieces and restarts, note its end."""
        for _key, entries in reply or ():
            for entry_id, fields in entries:
                self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                self._entry(StreamEntry.decode(fields))

    def _entry(self, entry: StreamEntry) -> None:
        if self.ended is not None:
            return
        if entry.event is StreamEvent.text:
            self.text += entry.text
            self.pending.append(entry.text)
        elif entry.event is StreamEvent.restart:
            self.text = ""
            self.pending.append(StreamRestarted(self.job_id, entry.run))
        else:
            self.ended = entry

    def settle_from(self, record: ResultRecord | None) -> None:
        """The job's final record, read while the stream was quiet (None: not stored
        yet, read on): the text it holds beyond what was read is the last piece (or,
        when it does not carry on from what was read, a restart and the whole text)."""
        if record is None:
            return
        result = decode_result(self.job_id, record, decode=False)  # raises its typed error
        text = str(result.get("text", ""))
        if text.startswith(self.text):
            rest = text[len(self.text) :]
        else:
            self.pending.append(StreamRestarted(self.job_id, 0))
            rest = text
        if rest:
            self.pending.append(rest)
        self.text = text
        self.done = True

    def next_item(self) -> str | StreamRestarted | None:
        """The next piece or restart to hand out, if one is queued."""
        return self.pending.pop(0) if self.pending else None

    def end(self) -> bool:
        """An end or error entry was read: nothing more to hand out. True for an error,
        which ``fail`` raises once the job's record has been waited for."""
        assert self.ended is not None
        self.done = True
        return self.ended.event is StreamEvent.error

    def fail(self, record: ResultRecord | None) -> NoReturn:
        """Raise the job's typed error: its record's, or, when the record cannot be
        read, the one the error entry names."""
        assert self.ended is not None
        if record is not None:
            decode_result(self.job_id, record, decode=False)  # raises its typed error
        raise error_from_result(self.ended.error or "ModelError", self.ended.message)


def _hand_out(item: str | StreamRestarted) -> str:
    if isinstance(item, StreamRestarted):
        raise item
    return item


class TextStream:
    """The pieces of a job's text as they are made (``Job.stream``)."""

    def __init__(
        self,
        redis: Any,
        job_id: str,
        final_record: Callable[[float], ResultRecord | None],
        timeout: float | None = None,
        key: str | None = None,
    ) -> None:
        self.redis = redis
        self.cursor = StreamCursor(job_id, key)
        self.final_record = final_record  # waits up to that long for the final record
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        cursor = self.cursor
        while True:
            item = cursor.next_item()
            if item is not None:
                return _hand_out(item)
            if cursor.done:
                raise StopIteration
            if cursor.ended is not None:
                if cursor.end():
                    cursor.fail(self.final_record(10.0))
                continue
            block = _block_ms(self.deadline, self.timeout, cursor.job_id)
            reply = self.redis.xread({cursor.key: cursor.last_id}, count=COUNT, block=block)
            if reply:
                cursor.take(reply)
            else:
                cursor.settle_from(self.final_record(0.0))


def _block_ms(deadline: float | None, timeout: float | None, job_id: str) -> int:
    if deadline is None:
        return BLOCK_MS
    left = deadline - time.monotonic()
    if left <= 0:
        raise JobTimeout(f"job {job_id} did not finish its text within {timeout} s")
    return max(1, min(BLOCK_MS, int(left * 1000)))


class AsyncTextStream:
    """``TextStream`` for asyncio (``AsyncJob.stream``): ``async for piece in ...``."""

    def __init__(
        self,
        redis: Any,
        job_id: str,
        final_record: Callable[[float], Any],
        timeout: float | None = None,
    ) -> None:
        self.redis = redis
        self.cursor = StreamCursor(job_id)
        self._located = False  # the stream's key read from the client's key space
        self.final_record = final_record  # a coroutine function
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout

    def __aiter__(self) -> AsyncTextStream:
        return self

    async def __anext__(self) -> str:
        cursor = self.cursor
        if not self._located:  # on a cluster, the stream is on the job's shard
            cursor.key = (await keyspace_async(self.redis)).stream_key(cursor.job_id)
            self._located = True
        while True:
            item = cursor.next_item()
            if item is not None:
                return _hand_out(item)
            if cursor.done:
                raise StopAsyncIteration
            if cursor.ended is not None:
                if cursor.end():
                    cursor.fail(await self.final_record(10.0))
                continue
            block = _block_ms(self.deadline, self.timeout, cursor.job_id)
            reply = await self.redis.xread({cursor.key: cursor.last_id}, count=COUNT, block=block)
            if reply:
                cursor.take(reply)
            else:
                cursor.settle_from(await self.final_record(0.0))
