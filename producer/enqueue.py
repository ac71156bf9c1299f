"""Enqueueing: idempotency, backpressure and the push, in one atomic Redis step.

For the jobs of a call, in order, the script skips ids that already have a submission
record (``aimass:job:<id>``: a caller-chosen id runs once), and stops at the first job
that would take the model's queue (the sum of its priority lists) past the bound;
it writes the record and pushes the message of each job before that. Senders that do
not use this script (plain Celery clients, other languages) are not counted against
the bound before they push: the bound is a soft one, kept by aimass producers.

A call of many jobs on one Redis pushes their messages in the same transaction,
right before the script (``PUSHED_FIRST``), and the script takes back out those of jobs
it did not accept: a message that enters a script is hashed there byte by byte (Redis's
Lua interns every string), ~3.7 µs of Redis's core for a one-image job's 2.4 KB, about
a tenth of what a job costs Redis in all (docs/performance.md, sizing the broker).
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
# count, how many messages the call pushed onto the target list right before the script
# (all of its jobs'), or 0 when each job's message follows its record here, then per job
# its record (and message), then the command that publishes the wake-up (PUBLISH;
# SPUBLISH on a cluster) and its channel. Returns {queue depth before the call, jobs
# accepted (a prefix)}.
# A job costs Redis one command here (SET NX, which is also the test for a duplicate
# id); messages given here go in one LPUSH at the end, in order, as one LPUSH each
# would. Messages pushed before stand where that LPUSH would have put them: a job's is
# at its distance from the call's last job (LPUSH puts each at the head); those of jobs
# not accepted, or duplicates, are overwritten with a mark and the marks removed, from
# the head, where they are the first the removal meets.
ENQUEUE_SCRIPT = """
local steps, pushed = tonumber(ARGV[3]), tonumber(ARGV[4])
local per = pushed > 0 and 1 or 2  -- ARGV entries per job
local target, depth = KEYS[steps + 1], 0
-- An empty list does not exist: one command finds a model's queue empty, as it is
-- whenever the workers keep up (but for the call's own list, when it pushed first).
local holding = redis.call('EXISTS', unpack(KEYS, 1, steps))
if holding > (pushed > 0 and 1 or 0) then
  for i = 1, steps do depth = depth + redis.call('LLEN', KEYS[i]) end
elseif pushed > 0 then
  depth = redis.call('LLEN', target)
end
depth = depth - pushed  -- the queue before the call
local before, bound = depth, tonumber(ARGV[1])
local jobs = #KEYS - steps - 1
local accepted, messages, withdrawn = 0, {}, {}
for n = 1, jobs do
  local key, a = KEYS[steps + 1 + n], 5 + per * (n - 1)
  if bound > 0 and depth >= bound then
    if redis.call('EXISTS', key) == 0 then break end
    withdrawn[#withdrawn + 1] = n  -- a duplicate: accepted, not pushed again
  elseif redis.call('SET', key, ARGV[a], 'NX', 'EX', ARGV[2]) then
    if pushed == 0 then messages[#messages + 1] = ARGV[a + 1] end
    depth = depth + 1
  else
    withdrawn[#withdrawn + 1] = n
  end
  accepted = accepted + 1
end
for i = 1, #messages, 1000 do  -- slices: unpack() has a bound on its values
  redis.call('LPUSH', target, unpack(messages, i, math.min(i + 999, #messages)))
end
if pushed > 0 then
  for n = accepted + 1, jobs do withdrawn[#withdrawn + 1] = n end
  if #withdrawn > 0 then
    local mark = ARGV[#ARGV - 2]
    for _, n in ipairs(withdrawn) do redis.call('LSET', target, pushed - n, mark) end
    redis.call('LREM', target, #withdrawn, mark)
  end
end
-- Workers wait for a wake-up only after a take that left the queue empty: a push onto
-- a queue that holds jobs has a wake-up (or a busy worker) before it.
if before == 0 and depth > 0 then redis.call(ARGV[#ARGV - 1], ARGV[#ARGV], depth) end
return {before, accepted}
"""

# What stands for a withdrawn message until it is removed: never a message's bytes (a
# message is JSON, and this is not).
WITHDRAWN = b"\x00aimass:withdrawn"
# Calls of this many jobs or more push their messages before the script, in a
# transaction: its four more commands (MULTI, LPUSH, EXEC, and an LLEN of the call's
# list) cost Redis about what two or three jobs save, but count as commands all the
# same; below this, a call stays one command (a closed loop of 8 jobs in flight sends
# calls of up to 8).
PUSHED_FIRST = 16


@dataclass(frozen=True)
class EnqueueCall:
    """The keys and arguments of one script call for jobs of one model and priority
    (``bound``: the model's; on a cluster, each shard holds its share)."""

    keys: list[str]
    args: list[str | bytes | int]
    messages: list[bytes]  # to push before the script, in a transaction; [] if in args

    @property
    def target(self) -> str:
        """The list the call's jobs go onto."""
        return self.keys[len(PRIORITY_STEPS)]

    @classmethod
    def of(
        cls,
        submissions: Sequence[Submission],
        bound: int,
        ttl_s: int,
        space: KeySpace = PLAIN,
        pushed_first: bool = False,
    ) -> EnqueueCall:
        """``pushed_first``: the messages go in ``messages``, to push right before the
        script in one transaction; else in the script's arguments."""
        first = submissions[0]
        tag = space.tag(first.job_id)
        if any(s.list_name != first.list_name or space.tag(s.job_id) != tag for s in submissions):
            raise ValueError("one enqueue call takes jobs of one model, priority and shard")
        keys = space.lists(first.model, tag)
        keys.append(message_list(first.model, first.priority, tag))
        keys.extend(space.submitted_key(s.job_id) for s in submissions)
        shard = shard_bound(bound, len(space.tags))
        messages = [pushed_message(s) for s in submissions]
        args: list[str | bytes | int] = [
            shard,
            ttl_s,
            len(PRIORITY_STEPS),
            len(messages) if pushed_first else 0,
        ]
        for submission, message in zip(submissions, messages, strict=True):
            args.append(submission.record())
            if not pushed_first:
                args.append(message)
        # Last: the mark of withdrawn messages; then idle workers look at once.
        args.append(WITHDRAWN)
        args.append("SPUBLISH" if space.sharded else "PUBLISH")
        args.append(space.wake_channel(first.model, tag))
        return cls(keys, args, messages if pushed_first else [])


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
        self.client = client
        self.bound = bound
        self.ttl_s = ttl_s
        self.space = space
        self._script = client.register_script(ENQUEUE_SCRIPT)

    def push(self, submissions: Sequence[Submission]) -> Pushed:
        """Enqueue jobs of one model and priority, in order, up to the bound; on a
        cluster, one call per shard (see ``by_shard``)."""
        space = self.space
        if not space.sharded:
            if len(submissions) >= PUSHED_FIRST:
                call = EnqueueCall.of(submissions, self.bound, self.ttl_s, pushed_first=True)
                return self._push_first(call)
            call = EnqueueCall.of(submissions, self.bound, self.ttl_s)
            return Pushed.of(self._script(keys=call.keys, args=call.args))
        replies = [
            Pushed.of(self._script(keys=call.keys, args=call.args))
            for call in by_shard(submissions, self.bound, self.ttl_s, space)
        ]
        return merged(submissions, replies, space)

    def _push_first(self, call: EnqueueCall) -> Pushed:
        """The messages pushed, then the script, in one transaction. The script goes by
        its text (EVAL), not its digest: a digest Redis lost (a restart, a failover)
        would fail the script alone, after the push."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(call.target, *call.messages)
            pipe.eval(ENQUEUE_SCRIPT, len(call.keys), *call.keys, *call.args)
            _, reply = pipe.execute()
        return Pushed.of(reply)

    def push_all(self, submissions: Sequence[Submission]) -> None:
        """Enqueue all these jobs, or raise ``QueueFull`` after those that fit."""
        check_all_accepted(self.push(submissions), submissions, self.bound)
