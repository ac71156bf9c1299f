"""Enqueueing: idempotency, backpressure and the push, in one atomic Redis script.

For the jobs of a call, in order, the script skips ids that already have a submission
record (``aimass:job:<id>``: a caller-chosen id runs once), and stops at the first job
that would take the model's queue (the sum of its priority lists) past the bound;
it writes the record and LPUSHes the message of each job before that. Senders that do
not use this script (plain Celery clients, other languages) are not counted against
the bound before they push: the bound is a soft one, kept by aimass producers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from aimass.producer.submission import Submission
from aimass.protocol.errors import QueueFull
from aimass.protocol.keys import PLAIN, PRIORITY_STEPS, KeySpace
from aimass.protocol.messages import message_list
from aimass.protocol.queues import ENCODER_MARK

# KEYS: the model's priority lists (ARGV[3] of them), the target list, then one record
# key per job (all of one shard on a cluster). ARGV: bound (0: none), record TTL, list
# count, then per job its record and message, then the command that publishes the
# wake-up (PUBLISH; SPUBLISH on a cluster) and its channel. Returns {queue depth before
# the call, jobs accepted (a prefix)}.
# A job costs Redis one command here (SET NX, which is also the test for a duplicate
# id); the messages go in one LPUSH at the end, in order, as one LPUSH each would.
ENQUEUE_SCRIPT = """
local steps = tonumber(ARGV[3])
local depth = 0
-- An empty list does not exist: one command finds a model's queue empty, as it is
-- whenever the workers keep up.
if redis.call('EXISTS', unpack(KEYS, 1, steps)) > 0 then
  for i = 1, steps do depth = depth + redis.call('LLEN', KEYS[i]) end
end
local before, bound, target = depth, tonumber(ARGV[1]), KEYS[steps + 1]
local accepted, messages = 0, {}
for j = steps + 2, #KEYS do
  local a = 4 + 2 * (j - steps - 2)
  if bound > 0 and depth >= bound then
    if redis.call('EXISTS', KEYS[j]) == 0 then break end
  elseif redis.call('SET', KEYS[j], ARGV[a], 'NX', 'EX', ARGV[2]) then
    messages[#messages + 1] = ARGV[a + 1]
    depth = depth + 1
  end
  accepted = accepted + 1
end
for i = 1, #messages, 1000 do  -- slices: unpack() has a bound on its values
  redis.call('LPUSH', target, unpack(messages, i, math.min(i + 999, #messages)))
end
-- Workers wait for a wake-up only after a take that left the queue empty: a push onto
-- a queue that holds jobs has a wake-up (or a busy worker) before it.
if before == 0 and depth > 0 then redis.call(ARGV[#ARGV - 1], ARGV[#ARGV], depth) end
return {before, accepted}
"""


@dataclass(frozen=True)
class EnqueueCall:
    """The keys and arguments of one script call for jobs of one model and priority
    (``bound``: the model's; on a cluster, each shard holds its share)."""

    keys: list[str]
    args: list[str | bytes | int]

    @classmethod
    def of(
        cls, submissions: Sequence[Submission], bound: int, ttl_s: int, space: KeySpace = PLAIN
    ) -> EnqueueCall:
        first = submissions[0]
        tag = space.tag(first.job_id)
        if any(s.list_name != first.list_name or space.tag(s.job_id) != tag for s in submissions):
            raise ValueError("one enqueue call takes jobs of one model, priority and shard")
        keys = space.lists(first.model, tag)
        keys.append(message_list(first.model, first.priority, tag))
        keys.extend(space.submitted_key(s.job_id) for s in submissions)
        shard = shard_bound(bound, len(space.tags))
        args: list[str | bytes | int] = [shard, ttl_s, len(PRIORITY_STEPS)]
        for submission in submissions:
            args.extend((submission.record(), pushed_message(submission)))
        # Last: idle workers look at once.
        args.append("SPUBLISH" if space.sharded else "PUBLISH")
        args.append(space.wake_channel(first.model, tag))
        return cls(keys, args)


def pushed_message(submission: Submission) -> bytes:
    """The bytes pushed for a job: its message, marked as the aimass encoder's
    (``ENCODER_MARK``) when its job id is a plain string, so that a worker reads the id
    without decoding the message; an id that JSON escapes goes unmarked."""
    message = submission.message()
    return ENCODER_MARK + message if _is_plain(submission.job_id) else message


def _is_plain(text: str) -> bool:
    """No character that JSON escapes: quotes, backslashes, control characters."""
    return '"' not in text and "\\" not in text and text.isprintable()


@dataclass(frozen=True)
class Pushed:
    """What one script call did."""

    accepted: int  # jobs taken, a prefix of the call: pushed now or submitted before
    depth: int  # the queue's depth before the call

    @classmethod
    def of(cls, reply: Any) -> Pushed:
        depth, accepted = (int(value) for value in reply)
        return cls(accepted=accepted, depth=depth)


def shard_bound(bound: int, shards: int) -> int:
    """The bound on one shard's jobs: an even share of the model's bound (0: none)."""
    return -(-bound // shards)


def by_shard(
    submissions: Sequence[Submission], bound: int, ttl_s: int, space: KeySpace
) -> list[EnqueueCall]:
    """One call per shard for jobs of one model and priority, each in input order."""
    groups: dict[str, list[Submission]] = {}
    for submission in submissions:
        groups.setdefault(space.tag(submission.job_id), []).append(submission)
    return [EnqueueCall.of(group, bound, ttl_s, space) for group in groups.values()]


def merged(submissions: Sequence[Submission], replies: list[Pushed], space: KeySpace) -> Pushed:
    """What the calls of ``by_shard`` did, as one call would say it: jobs accepted, the
    longest prefix of the input all taken (a job of another shard taken past it is a
    duplicate when sent again: it runs once), and the depth of the shards before."""
    accepted_by_tag = {}
    tags = list(dict.fromkeys(space.tag(s.job_id) for s in submissions))
    for tag, reply in zip(tags, replies, strict=True):
        accepted_by_tag[tag] = reply.accepted
    seen: dict[str, int] = {}
    accepted = 0
    for submission in submissions:
        tag = space.tag(submission.job_id)
        seen[tag] = seen.get(tag, 0) + 1
        if seen[tag] > accepted_by_tag[tag]:
            break
        accepted += 1
    return Pushed(accepted=accepted, depth=sum(reply.depth for reply in replies))


def queue_full(queue: str, depth: int, bound: int) -> QueueFull:
    return QueueFull(
        f"queue {queue} holds {depth} jobs, at its bound of {bound}; retry when the workers "
        "have caught up, or raise the bound (Client(max_queue_depth=...) or "
        "AIMASS_MAX_QUEUE_DEPTH)"
    )


def check_all_accepted(pushed: Pushed, submissions: Sequence[Submission], bound: int) -> None:
    """Raise ``QueueFull`` unless every job of the call was taken."""
    if pushed.accepted < len(submissions):
        raise queue_full(submissions[0].queue, pushed.depth + pushed.accepted, bound)


class Enqueuer:
    """Runs the enqueue script on a synchronous Redis client."""

    def __init__(
        self, client: redis.Redis, bound: int, ttl_s: int, space: KeySpace = PLAIN
    ) -> None:
        self.bound = bound
        self.ttl_s = ttl_s
        self.space = space
        self._script = client.register_script(ENQUEUE_SCRIPT)

    def push(self, submissions: Sequence[Submission]) -> Pushed:
        """Enqueue jobs of one model and priority, in order, up to the bound; on a
        cluster, one call per shard (see ``by_shard``)."""
        space = self.space
        if not space.sharded:
            call = EnqueueCall.of(submissions, self.bound, self.ttl_s)
            return Pushed.of(self._script(keys=call.keys, args=call.args))
        replies = [
            Pushed.of(self._script(keys=call.keys, args=call.args))
            for call in by_shard(submissions, self.bound, self.ttl_s, space)
        ]
        return merged(submissions, replies, space)

    def push_all(self, submissions: Sequence[Submission]) -> None:
        """Enqueue all these jobs, or raise ``QueueFull`` after those that fit."""
        check_all_accepted(self.push(submissions), submissions, self.bound)
