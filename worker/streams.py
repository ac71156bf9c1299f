"""Writing sequence jobs' streams (aimass/protocol/streams.py) on a thread of their own,
so that the decoding loop never waits for Redis.

The loop hands over each step's entries; this thread writes all it has at hand in one
pipeline (an XADD per entry, an EXPIRE per stream), then settles the streaming
sequences that ended, so that a job's last entry is in its stream before its result is
stored. A run's first write asks Redis, in the same script, whether the stream exists
already: then an earlier run of the job (on a worker that died) wrote to it, and a
``restart`` entry says that the text starts again.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import redis

from aimass.protocol.shards import keyspace
from aimass.protocol.streams import StreamEntry, StreamEvent
from aimass.worker.decoding import resolve
from aimass.worker.handoffs import at_hand
from aimass.worker.retries import until_done
from aimass.worker.sequences import Decoding

log = logging.getLogger(__name__)

# Room in a stream past its sequence's tokens (restart, end and error entries): a
# stream holds at most one entry per token and a few more, so its cap loses nothing.
SPARE_ENTRIES = 16

# KEYS: the stream. ARGV: its cap. When the stream exists (an earlier run wrote to it),
# adds a restart entry numbering this run (the earlier runs' restart entries, plus two)
# and returns that number; else 0. Returns -1, adding nothing, when the stream has ended
# already: this run is a second delivery of a job answered meanwhile, and writes nothing.
_START = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if last then
  local f = last[2]
  for i = 1, #f, 2 do
    if f[i] == 'event' and (f[i + 1] == 'end' or f[i + 1] == 'error') then return -1 end
  end
end
local run = 2
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == 'event' and f[i + 1] == 'restart' then run = run + 1 end
  end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', 'restart', 'run', run)
return run
"""

_Step = tuple[list[Decoding], list[tuple[Decoding, str]], list[Decoding]]


class StreamWriter:
    """The stream writer of one worker process (every sequence model's decoder)."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.client = client
        self.space = keyspace(client)  # on a cluster, a job's stream is on its shard
        self.ttl_s = ttl_s
        self._start = client.register_script(_START)
        self._steps: queue.SimpleQueue[_Step | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="aimass-streams", daemon=True)
        self._thread.start()

    def step(
        self,
        started: list[Decoding],
        written: list[tuple[Decoding, str]],
        ended: list[Decoding],
    ) -> None:
        self._steps.put((started, written, ended))

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the thread."""
        self._steps.put(None)
        self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while (steps := at_hand(self._steps, 256)) is not None:
            self._write(steps)

    def _write(self, steps: list[_Step]) -> None:
        until_done(
            lambda: self._pipeline(steps),
            log,
            f"write {len(steps)} steps of streams",
            mend=self._load_script,
        )
        for _, _, ended in steps:
            for decoding in ended:
                resolve(decoding)

    def _load_script(self, exc: redis.RedisError) -> bool:
        """A cluster's pipelines do not load scripts, and a failed-over primary lacks
        them: load the start script where Redis did not know it."""
        if not _no_script(exc):
            return False
        self.client.script_load(_START)
        return True

    def _pipeline(self, steps: list[_Step]) -> None:
        """One pipeline for the steps at hand. A stream's text of several steps goes in
        one entry: when this thread falls behind the loop, it writes fewer, longer
        entries rather than falling further behind (the text is the same)."""
        started: set[Decoding] = set()
        texts: dict[Decoding, list[str]] = {}  # in the order the sequences wrote
        ended: list[Decoding] = []
        for step_started, written, step_ended in steps:
            started.update(step_started)
            for d in step_started:
                texts.setdefault(d, [])
            for d, text in written:
                texts.setdefault(d, []).append(text)
            ended.extend(step_ended)
        if started:
            self._begin(started)
        pipe: Any = self.client.pipeline(transaction=False)
        touched: set[str] = set()
        for d, pieces in texts.items():
            if pieces and not d.muted:
                self._add(pipe, d, StreamEntry(StreamEvent.text, text="".join(pieces)), touched)
        for d in ended:
            if not d.muted:
                self._add(pipe, d, _final_entry(d), touched)
        for key in touched:
            pipe.expire(key, self.ttl_s)
        pipe.execute()

    def _begin(self, started: set[Decoding]) -> None:
        """Runs' first writes: a restart entry where an earlier run wrote; a run whose
        job's stream has ended already is muted."""
        pipe: Any = self.client.pipeline(transaction=False)
        ordered = list(started)
        for d in ordered:
            self._start(keys=[self.space.stream_key(str(d.job_id))], args=[_cap(d)], client=pipe)
        for d, run in zip(ordered, pipe.execute(), strict=True):
            d.muted = int(run) < 0
            if int(run) > 0:
                log.warning("job %s runs again (run %d): its stream starts over", d.job_id, run)

    def _add(self, pipe: Any, d: Decoding, entry: StreamEntry, touched: set[str]) -> None:
        key = self.space.stream_key(str(d.job_id))
        pipe.xadd(key, entry.fields(), maxlen=_cap(d), approximate=True)
        touched.add(key)


def _no_script(exc: redis.RedisError) -> bool:
    """Redis did not know the start script: on a cluster's pipeline, redis-py raises it
    as a plain error that quotes Redis's NOSCRIPT message."""
    return isinstance(exc, redis.exceptions.NoScriptError) or "No matching script" in str(exc)


def _cap(d: Decoding) -> int:
    return d.max_tokens + SPARE_ENTRIES


def _final_entry(d: Decoding) -> StreamEntry:
    if d.error is not None:
        return StreamEntry(
            StreamEvent.error, error=type(d.error).__name__, message=str(d.error.message)
        )
    return StreamEntry(StreamEvent.end, finish_reason=str(d.finish_reason), tokens=d.tokens)
