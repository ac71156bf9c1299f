"""Enqueueing: idempotency, backpressure and the push, in one atomic Redis script.

For each job of a call the script skips ids that already have a submission record
(``aimass:job:<id>``, so a caller-chosen id runs once), and refuses the whole call when
the model's queue (the sum of its priority lists) would go above the bound. Otherwise it
writes the records and LPUSHes the messages. Senders that do not use this script (plain
Celery clients, other languages) are not counted against the bound before they push:
the bound is a soft one, kept by aimass producers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from producer.contract import PRIORITY_STEPS, priority_queue_name
from producer.errors import QueueFull
from producer.keys import submitted_key
from producer.submission import Submission

# KEYS: the model's priority lists (len(PRIORITY_STEPS)), the target list, then one
# record key per job. ARGV: bound (0: none), record TTL, then per job record, message.
# Returns {depth before, pushed (1) or duplicate (0) per job}, or {-1, depth} when full.
ENQUEUE_SCRIPT = """
local steps = tonumber(ARGV[3])
local depth = 0
for i = 1, steps do depth = depth + redis.call('LLEN', KEYS[i]) end
local target = KEYS[steps + 1]
local fresh, seen, count = {}, {}, 0
for j = steps + 2, #KEYS do
  if not seen[KEYS[j]] and redis.call('EXISTS', KEYS[j]) == 0 then
    fresh[j] = true; count = count + 1
  end
  seen[KEYS[j]] = true
end
local bound = tonumber(ARGV[1])
if bound > 0 and count > 0 and depth + count > bound then return {-1, depth} end
local out = {depth}
for j = steps + 2, #KEYS do
  local a = 4 + 2 * (j - steps - 2)
  if fresh[j] then
    redis.call('SET', KEYS[j], ARGV[a], 'EX', ARGV[2])
    redis.call('LPUSH', target, ARGV[a + 1])
    table.insert(out, 1)
  else
    table.insert(out, 0)
  end
end
return out
"""


@dataclass(frozen=True)
class EnqueueCall:
    """The keys and arguments of one script call for jobs of one model and priority."""

    keys: list[str]
    args: list[str | bytes | int]

    @classmethod
    def of(cls, submissions: Sequence[Submission], bound: int, ttl_s: int) -> EnqueueCall:
        first = submissions[0]
        if any(s.list_name != first.list_name for s in submissions):
            raise ValueError("one enqueue call takes jobs of one model and priority")
        keys = [priority_queue_name(first.model, step) for step in PRIORITY_STEPS]
        keys.append(first.list_name)
        keys.extend(submitted_key(s.job_id) for s in submissions)
        args: list[str | bytes | int] = [bound, ttl_s, len(PRIORITY_STEPS)]
        for submission in submissions:
            args.extend((submission.record(), submission.message()))
        return cls(keys, args)


def pushed_flags(reply: Any, submissions: Sequence[Submission], bound: int) -> list[bool]:
    """Per job: pushed now (True) or already submitted under its id (False); raises
    ``QueueFull`` when the script refused the call."""
    depth, *flags = (int(value) for value in reply)
    if depth == -1:
        held = flags[0]
        queue = submissions[0].queue
        raise QueueFull(
            f"queue {queue} holds {held} jobs and {len(submissions)} more would pass its "
            f"bound of {bound}; retry when the workers have caught up, or raise the bound "
            "(Client(max_queue_depth=...) or AIMASS_MAX_QUEUE_DEPTH)")
    return [flag == 1 for flag in flags]


class Enqueuer:
    """Runs the enqueue script on a synchronous Redis client."""

    def __init__(self, client: redis.Redis, bound: int, ttl_s: int) -> None:
        self.bound = bound
        self.ttl_s = ttl_s
        self._script = client.register_script(ENQUEUE_SCRIPT)

    def push(self, submissions: Sequence[Submission]) -> list[bool]:
        """Enqueue jobs of one model and priority, all or none (see ``pushed_flags``)."""
        call = EnqueueCall.of(submissions, self.bound, self.ttl_s)
        return pushed_flags(self._script(keys=call.keys, args=call.args), submissions,
                            self.bound)


def queue_depth(client: redis.Redis, model: str) -> int:
    """Jobs waiting in a model's queue, all priorities (one LLEN pipeline)."""
    pipe = client.pipeline(transaction=False)
    for step in PRIORITY_STEPS:
        pipe.llen(priority_queue_name(model, step))
    return sum(int(n) for n in pipe.execute())
