"""Bulk access to the model queues, in kombu's own bookkeeping.

``take`` pops up to N messages from a model's priority lists in one atomic Lua call and
records each in kombu's unacknowledged hash and index, exactly as kombu's Redis
transport does for one message, so that kombu restores a dead worker's jobs after the
visibility timeout. ``settle`` stores a batch of results and acknowledges their
messages in one call. See docs/performance.md for why, and docs/reliability.md for
what it guarantees.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from aimass.protocol.keys import (
    CANCELLED_PREFIX,
    PLAIN,
    PRIORITY_STEPS,
    RESULT_KEY_PREFIX,
    RUNS_HASH,
    KeySpace,
    priority_queue_name,
)
from aimass.protocol.queues import ENCODER_MARK
from aimass.protocol.records import ResultRecord, started_template
from aimass.protocol.shards import next_published, subscribe, unsubscribe
from aimass.worker import held
from aimass.worker.queue_scripts import BACKLOG, SETTLE, TAKE


@dataclass(frozen=True)
class Taken:
    """A message taken from a queue. ``delivery_tag`` is the tag it is recorded under in
    kombu's unacked hash and index (its message's delivery tag, padded past 64 bytes:
    see ``queue_scripts.TAKE``), or "" when it was not a kombu envelope (then it is not recorded and
    there is nothing to acknowledge)."""

    delivery_tag: str
    raw: bytes
    runs: int = 0  # times a worker started running its job and died before answering
    queue: str = ""  # the queue it was taken from (aimass.<model>)
    cancelled: bool = False  # a producer cancelled its job


@dataclass(frozen=True)
class Settlement:
    """A result to store (``record`` under ``task_id``) and a message to acknowledge."""

    delivery_tag: str
    task_id: str | None
    record: ResultRecord | None
    dead_letter: str = ""  # the list to park the message in, for a job run too often
    raw: bytes = b""  # the message, when it is parked


class ModelQueues:
    """The Redis side of the bulk consumer for a set of model queues: on a cluster, every
    shard of each (``aimass.protocol.keys.KeySpace``), one script call per shard."""

    def __init__(
        self,
        client: redis.Redis,
        models: Sequence[str],
        worker_name: str,
        result_ttl_s: int,
        max_message_bytes: int = 32 * 1024 * 1024,
        track_started: bool = False,
        space: KeySpace = PLAIN,
        move_takes_at: int = 0,
        count_runs_at_take: bool = False,
    ) -> None:
        self.client = client
        self.space = space
        self.started_head, self.started_tail = started_template(worker_name)
        self.track_started = track_started  # a STARTED record per job taken (a SET each)
        self.result_ttl_s = result_ttl_s
        self.max_message_bytes = max_message_bytes
        self._take = client.register_script(TAKE)
        self._settle = client.register_script(SETTLE)
        self._backlog = client.register_script(BACKLOG)
        self._pubsub: Any = None
        self._subscribed: list[str] = []
        self._first = 0  # the shard a take starts at: each in turn, so that none waits
        self._shard_of_tag: dict[str, str] = {}  # delivery tag -> its shard, until settled
        # A take of at least this many jobs moves them inside Redis first (worker/held.py)
        # where the queue holds more than it takes; 0: never. Asked for (the move's read
        # rides along) where the shard's last take, of any size, was full and left jobs
        # behind.
        self.move_takes_at = move_takes_at
        self._behind: dict[str, bool] = {}  # shard -> its last take left a backlog
        # shard -> a moved take not yet recorded: its hold, the hold's member, the base
        self._unrecorded: dict[str, tuple[str, bytes, bytes]] = {}
        # Each take may fill a hold of its own, named after this process (a worker
        # restarted under the same name gets new ones) and a count: a move never
        # overwrites a hold that is still there.
        self._take_id = f"{worker_name}.{uuid.uuid4().hex[:12]}".replace("{", "(").replace("}", ")")
        self._holds_made = itertools.count(1)
        # Where the take counts a job's first run (one command in the take's round trip),
        # mark_runs counts only the runs of jobs taken with runs behind them (each runs
        # alone): the ids the consumer names with count_at_start, until counted or settled.
        self.count_runs_at_take = count_runs_at_take
        self._count_at_start: set[str] = set()
        self.set_models(models)

    def set_models(self, models: Sequence[str]) -> None:
        """Serve these models' queues: every high-priority list before any lower one."""
        self.models = list(models)
        space = self.space
        # The consumer thread (re)subscribes at its next wait; this may run elsewhere.
        self.channels = [space.wake_channel(m, t) for t in space.tags for m in self.models]
        self.lists = {
            t: [priority_queue_name(m, step, t) for step in PRIORITY_STEPS for m in self.models]
            for t in space.tags
        }
        self.bases = {
            t: [space.queue(m, t) for _ in PRIORITY_STEPS for m in self.models] for t in space.tags
        }
        self.slots = [(m, step) for step in PRIORITY_STEPS for m in self.models]

    def take(self, limit: int) -> list[Taken]:
        """Up to ``limit`` messages, highest priority first, recorded as unacknowledged;
        on a cluster from each shard in turn, starting at the next one each time."""
        tags = self.space.tags
        self._first = (self._first + 1) % len(tags)
        out: list[Taken] = []
        for tag in tags[self._first :] + tags[: self._first]:
            if len(out) >= limit:
                break
            out += self._take_from(tag, limit - len(out))
        return out

    def _take_from(self, tag: str, limit: int) -> list[Taken]:
        if tag in self._unrecorded:  # a moved take whose record failed: record it first
            hold, member, base = self._unrecorded[tag]
            held_now: list[bytes] = self.client.lrange(hold, 0, -1)  # type: ignore[assignment]
            taken = self._record(tag, hold, member, base, held_now)
        else:
            move = 0 < self.move_takes_at <= limit and self._behind.get(tag, False)
            taken, self._behind[tag] = self._moved(tag, limit) if move else self._popped(tag, limit)
        if self.space.sharded:
            self._shard_of_tag.update((t.delivery_tag, tag) for t in taken if t.delivery_tag)
        return taken

    def _new_hold(self, tag: str) -> str:
        return self.space.hold(f"{self._take_id}.{next(self._holds_made)}", tag)

    def _take_args(self, tag: str, limit: int, hold: str = "") -> tuple[list[str], list[Any]]:
        """The take script's keys and arguments (``hold``: where a move may go, if any)."""
        move_now = int(bool(hold))
        hold = hold or self.space.hold(self._take_id, tag)  # not moved to: still a key
        keys = [*self.space.bookkeeping(tag), hold, *self.lists[tag]]
        args: list[Any] = [
            limit,
            repr(time.time()),
            self.result_ttl_s,
            self.started_head,
            self.started_tail,
            self.max_message_bytes,
            int(self.track_started),
            ENCODER_MARK,
            RESULT_KEY_PREFIX + tag,
            CANCELLED_PREFIX + tag,
            self.move_takes_at,
            move_now,
            int(self.count_runs_at_take),
            *self.bases[tag],
        ]
        return keys, args

    def _popped(self, tag: str, limit: int) -> tuple[list[Taken], bool]:
        """A take in one step: the messages popped and recorded by the script, and
        whether it left a backlog that the next take may move."""
        keys, args = self._take_args(tag, limit)
        flat = self._take(keys=keys, args=args)
        return _taken(flat), int(flat[0]) == 2

    def _moved(self, tag: str, limit: int) -> tuple[list[Taken], bool]:
        """A take that may move its messages onto this worker's hold (the script decides,
        by how many wait), read in the same round trip, then recorded; and whether it
        left a backlog (a move always does)."""
        hold = self._new_hold(tag)
        keys, args = self._take_args(tag, limit, hold)

        def take_and_read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", self._take.sha, len(keys), *keys, *args)
            pipe.lrange(hold, 0, -1)
            return pipe.execute()

        try:
            flat, messages = take_and_read()
        except redis.exceptions.NoScriptError:  # a restarted or new primary: once more
            self.client.script_load(TAKE)
            flat, messages = take_and_read()
        if int(flat[0]) != 1:
            return _taken(flat), int(flat[0]) == 2
        member, base = flat[1], flat[2]
        self._unrecorded[tag] = (hold, member, base)
        return self._record(tag, hold, member, base, messages), True

    def _record(
        self, tag: str, hold: str, member: bytes, base: bytes, messages: list[bytes]
    ) -> list[Taken]:
        recorded = held.record(
            self.client,
            self.space.bookkeeping(tag),
            hold,
            member,
            messages,
            base,
            time.time(),
            self.max_message_bytes,
            [
                CANCELLED_PREFIX + tag,
                int(self.track_started),
                RESULT_KEY_PREFIX + tag,
                self.result_ttl_s,
                self.started_head,
                self.started_tail,
                int(self.count_runs_at_take),
            ],
        )
        del self._unrecorded[tag]
        queue = _text(base)
        return [Taken(_tag(r.tag), r.raw, r.runs, queue, r.cancelled) for r in recorded]

    def wait(self, timeout: float, limit: int) -> list[Taken]:
        """Wait for a producer's wake-up or ``timeout`` (the idle poll), then take.

        Never a blocking pop: a worker killed inside BRPOP can still be handed the next
        message by Redis, which then goes nowhere. Every pop happens in the take
        script, which records the message as unacknowledged in the same step."""
        if self._pubsub is None:
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        channels = self.channels
        if channels != self._subscribed:
            unsubscribe(self._pubsub, self.space, self._subscribed)
            subscribe(self._pubsub, self.space, channels)
            self._subscribed = channels
        message = next_published(self._pubsub, self.space, timeout)
        while message is not None:  # several wake-ups need one look
            message = next_published(self._pubsub, self.space, 0)
        return self.take(limit)

    def settle(self, settlements: Sequence[Settlement]) -> None:
        """Store results (first answer wins) and acknowledge their messages, atomically
        (per shard, on a cluster: where each message was taken from)."""
        by_shard: dict[str, list[Settlement]] = {}
        for s in settlements:
            by_shard.setdefault(self._shard_of(s), []).append(s)
        publish = "SPUBLISH" if self.space.sharded else "PUBLISH"
        for tag, group in by_shard.items():
            args: list[Any] = [self.result_ttl_s, int(self.track_started), publish]
            for s in group:
                key = f"{RESULT_KEY_PREFIX}{tag}{s.task_id}" if s.task_id and s.record else ""
                args += [
                    s.delivery_tag.encode("utf-8", "surrogateescape"),
                    key,
                    s.record.encode() if s.record else b"",
                    s.task_id or "",
                    s.dead_letter,
                    s.raw if s.dead_letter else b"",
                ]
            self._settle(keys=self.space.bookkeeping(tag)[:3], args=args)
        for s in settlements:
            self._shard_of_tag.pop(s.delivery_tag, None)
            if s.task_id:
                self._count_at_start.discard(s.task_id)

    def _shard_of(self, settlement: Settlement) -> str:
        """The shard a settled message came from ("" on one Redis)."""
        if not self.space.sharded:
            return ""
        tag = self._shard_of_tag.get(settlement.delivery_tag)
        if tag is None:  # no delivery tag: nothing to acknowledge, a result at most
            tag = self.space.tag(settlement.task_id or "")
        return tag

    def backlog(self) -> dict[str, dict[int, tuple[int, str]]]:
        """Per model and priority step: how many jobs wait, and the id of the oldest (on a
        cluster: of the longest shard's)."""
        # set_models may run meanwhile, on another thread: pair what was asked for.
        slots = self.slots
        totals: dict[tuple[str, int], tuple[int, int, str]] = {}  # total, longest, its id
        for tag in self.space.tags:
            flat = self._backlog(keys=[priority_queue_name(m, s, tag) for m, s in slots])
            for i, slot in enumerate(slots):
                length, job_id = int(flat[2 * i]), _text(flat[2 * i + 1])
                total, longest, oldest = totals.get(slot, (0, 0, ""))
                if length > longest:
                    longest, oldest = length, job_id
                totals[slot] = (total + length, longest, oldest)
        out: dict[str, dict[int, tuple[int, str]]] = {}
        for (model, step), (total, _, oldest) in totals.items():
            out.setdefault(model, {})[step] = (total, oldest)
        return out

    def count_at_start(self, job_id: str) -> None:
        """This job was taken with runs behind it: where the take counts first runs, its
        run is counted as it starts (mark_runs), as every run is otherwise."""
        if self.count_runs_at_take:
            self._count_at_start.add(job_id)

    def mark_runs(self, job_ids: Sequence[str]) -> None:
        """Count a run of each of these jobs, about to start: if the worker dies in it, the
        count stays (the job's result, when stored, takes it away). One command a batch: a
        job with a run behind it runs in a batch of its own (BulkConsumer._start), so in a
        batch of several every job starts its first run. Where the take counted first runs
        already (``count_runs_at_take``), only the jobs named by count_at_start are counted
        here, and a batch of first runs costs no command at all."""
        if self.count_runs_at_take:
            job_ids = [i for i in job_ids if i in self._count_at_start]
            self._count_at_start.difference_update(job_ids)
        by_hash: dict[str, list[str]] = {}
        for job_id in job_ids:
            by_hash.setdefault(RUNS_HASH + self.space.tag(job_id), []).append(job_id)
        for runs, ids in by_hash.items():
            if len(ids) == 1:
                self.client.hincrby(runs, ids[0], 1)
            else:
                self.client.hset(runs, mapping=dict.fromkeys(ids, 1))


def _taken(flat: list[Any]) -> list[Taken]:
    """The messages a one-step take returned (after its leading 0)."""
    return [
        Taken(
            _tag(flat[i]),
            flat[i + 1],
            int(flat[i + 2]),
            _text(flat[i + 3]),
            bool(int(flat[i + 4])),
        )
        for i in range(1, len(flat), 5)
    ]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _tag(value: bytes) -> str:
    """A delivery tag as the take recorded it: any bytes (Redis's JSON decoder lets bytes
    that are not UTF-8 through), kept as they are (surrogateescape), so that the settle
    hands back the same bytes to acknowledge it."""
    return value.decode("utf-8", "surrogateescape")
