"""Waiting for results without a busy loop: one pub/sub connection for many jobs.

Celery's Redis result backend PUBLISHes each stored meta on the channel named like its
key (``celery-task-meta-<id>``). A watcher subscribes first, then reads the keys once
(a result stored before the subscription is not published again), then waits on the
channel. A publish can be missed across a reconnect, so pending keys are read again
after ``REFRESH_S`` without news. ``aimass.producer.aio`` has the asyncio twin.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any

import redis

from aimass.producer.results import is_final
from aimass.protocol.keys import PLAIN, KeySpace
from aimass.protocol.records import ResultRecord
from aimass.protocol.shards import keyspace, mget, next_published, subscribe, unsubscribe

# Seconds without a message after which pending results are read again.
REFRESH_S = 1.0
# After losing Redis (a restart, a failover), how long to wait before asking again.
RECONNECT_S = 0.5
# Keys per SUBSCRIBE or MGET command.
CHUNK = 500


class Watchlist:
    """The bookkeeping of a watcher, without IO: jobs pending and jobs finished."""

    def __init__(self, space: KeySpace = PLAIN) -> None:
        self.space = space
        self.pending: set[str] = set()
        self.unsubscribed: list[str] = []  # watched, channel not subscribed to yet
        self.finished: deque[tuple[str, ResultRecord]] = deque()
        # Finished jobs whose channels are still subscribed to. Nothing more is published
        # on them (first answer wins), so they are left CHUNK at a time, in one command,
        # and the rest go with the connection: not one UNSUBSCRIBE per job.
        self.done_channels: dict[str, None] = {}  # insertion-ordered
        self.last_refresh = time.monotonic()

    @property
    def outstanding(self) -> int:
        """Jobs watched and not yet reported finished."""
        return len(self.pending) + len(self.finished)

    def add(self, job_ids: Iterable[str]) -> list[str]:
        """Record new jobs; the ids not watched before, in chunks to subscribe to."""
        fresh = [job_id for job_id in dict.fromkeys(job_ids) if job_id not in self.pending]
        self.pending.update(fresh)
        for job_id in fresh:  # watched again: its channel must stay
            self.done_channels.pop(self.space.result_key(job_id), None)
        return fresh

    def note(self, job_id: str, record: ResultRecord | None) -> bool:
        """Note a stored record; True when it finishes a pending job."""
        if record is None or not is_final(record) or job_id not in self.pending:
            return False
        self.pending.discard(job_id)
        self.finished.append((job_id, record))
        self.done_channels[self.space.result_key(job_id)] = None
        return True

    def channels_to_leave(self) -> list[str]:
        """A chunk of finished jobs' channels to unsubscribe from, once there is one."""
        if len(self.done_channels) < CHUNK:
            return []
        chunk = list(islice(self.done_channels, CHUNK))
        for channel in chunk:
            del self.done_channels[channel]
        return chunk

    def refresh_due(self) -> bool:
        return time.monotonic() - self.last_refresh >= REFRESH_S

    def time_to_wait(self, deadline: float | None) -> float | None:
        """How long the next wait for news may take; ``None`` when there is nothing to
        wait for: a job has finished, none is pending, or the deadline has passed."""
        if self.finished:
            return None
        left = time_left(deadline)
        return left if self.pending and left > 0 else None

    def lost_redis(self) -> None:
        """Redis restarting, or failing over to a replica: results published meanwhile
        were missed, so read them all once it answers again."""
        self.last_refresh = 0.0

    def next_finished(self) -> tuple[str, ResultRecord] | None:
        return self.finished.popleft() if self.finished else None


def job_id_of(message: dict[str, Any], space: KeySpace = PLAIN) -> str:
    """The job id of a pub/sub message on a result channel."""
    channel = message["channel"]
    key = channel.decode() if isinstance(channel, bytes) else str(channel)
    return space.job_id_of(key)


def in_chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def time_left(deadline: float | None) -> float:
    """Seconds to the deadline (``REFRESH_S`` when there is none)."""
    return REFRESH_S if deadline is None else deadline - time.monotonic()


class ResultWatcher:
    """Reports jobs as they finish; add jobs at any time with ``watch``."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._space = keyspace(client)
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._list = Watchlist(self._space)

    def __enter__(self) -> ResultWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pubsub.close()

    @property
    def pending(self) -> int:
        """Jobs watched and not yet reported finished."""
        return self._list.outstanding

    def watch(self, job_ids: Iterable[str]) -> None:
        """Start watching these jobs (ids already watched are ignored)."""
        fresh = self._list.add(job_ids)
        self._list.unsubscribed.extend(fresh)
        try:
            self._subscribe()
            self._refresh(fresh)
        except redis.ConnectionError:  # see next_finished: it reads them once Redis is back
            self._list.last_refresh = 0.0

    def _subscribe(self) -> None:
        """Subscribe to the channels of jobs watched but not yet subscribed to."""
        waiting = self._list.unsubscribed
        while waiting:
            chunk = waiting[:CHUNK]
            subscribe(self._pubsub, self._space, [self._space.result_key(i) for i in chunk])
            del waiting[: len(chunk)]

    def next_finished(self, timeout: float | None) -> tuple[str, ResultRecord] | None:
        """The id and stored record of the next job to finish; ``None`` when ``timeout``
        seconds pass first or nothing is being watched."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (left := self._list.time_to_wait(deadline)) is not None:
            try:
                self._step(left)
            except redis.ConnectionError:
                time.sleep(min(RECONNECT_S, left))
                self._list.lost_redis()
                if self._space.sharded:
                    self._reroute()
        return self._list.next_finished()

    def _reroute(self) -> None:
        """On a cluster, after a failover: read the pending results, which also makes
        redis-py learn the new slot owners, where the subscriptions then go."""
        try:
            self._refresh(list(self._list.pending))
        except redis.RedisError:
            self._list.lost_redis()

    def _step(self, left: float) -> None:
        self._subscribe()
        if leave := self._list.channels_to_leave():
            unsubscribe(self._pubsub, self._space, leave)
        message = next_published(self._pubsub, self._space, min(REFRESH_S, left))
        if message is not None:
            job_id = job_id_of(message, self._space)
            self._note(job_id, ResultRecord.decode(message["data"], job_id))
        elif self._list.refresh_due():
            self._refresh(list(self._list.pending))

    def _refresh(self, job_ids: list[str]) -> None:
        self._list.last_refresh = time.monotonic()
        for chunk in in_chunks(job_ids):
            values = mget(self._redis, [self._space.result_key(i) for i in chunk])
            for job_id, raw in zip(chunk, values, strict=True):
                self._note(job_id, ResultRecord.decode(raw, job_id))

    def _note(self, job_id: str, record: ResultRecord | None) -> None:
        self._list.note(job_id, record)
