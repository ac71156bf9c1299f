"""The visibility-timeout restore of what kombu's own sweeper does not know.

kombu's sweeper knows one Redis and its one unacknowledged hash; a cluster has one per
shard, which this sweeps. And a large take moves its messages onto a hold of the
worker's before it records them in kombu's bookkeeping (worker/held.py): a worker that
died between the two steps leaves a hold, on one Redis as on a cluster, which this puts
back.

Each worker sweeps every shard now and then (``Restorer.sweep``): one script call per
shard puts each message held for longer than the visibility timeout back at the head of
its shard's priority list, as kombu does on one Redis (which keeps doing it there for
its hash). The scripts are atomic per message or hold, so that workers sweeping at once
restore a message once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aimass.protocol.keys import PRIORITY_SEPARATOR, PRIORITY_STEPS, KeySpace

# KEYS: unacked hash, unacked index (one shard's). ARGV: the cutoff (delivery times at or
# before it are restored), the most to restore in one call, the shard's hash tag, the
# priority separator, then the priority steps in order. An entry is '[' message ','
# exchange ',' routing key ']' (worker/queue_scripts.py's take): the message goes back as
# it was taken, byte for byte, onto its routing key's list in its shard (the tag is
# added to a routing key that lacks it), the list of its priority's step. Returns the
# number restored.
_RESTORE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local tag, sep = ARGV[3], ARGV[4]
local restored = 0
local function step_of(priority)
  local step = tonumber(ARGV[5])
  for i = 5, #ARGV do
    if tonumber(ARGV[i]) <= priority then step = tonumber(ARGV[i]) end
  end
  return step
end
for _, dtag in ipairs(due) do
  local entry = redis.call('HGET', KEYS[1], dtag)
  redis.call('ZREM', KEYS[2], dtag)
  redis.call('HDEL', KEYS[1], dtag)
  local ok, parts = pcall(cjson.decode, entry or '')
  if ok and type(parts) == 'table' and type(parts[3]) == 'string' then
    local tail = ',' .. cjson.encode(parts[2]) .. ',' .. cjson.encode(parts[3]) .. ']'
    local raw = string.sub(entry, 2, #entry - #tail)
    local rk = parts[3]
    if string.sub(rk, -#tag) ~= tag then rk = rk .. tag end
    local priority = 0
    if type(parts[1]) == 'table' and type(parts[1]['properties']) == 'table' then
      priority = tonumber(parts[1]['properties']['priority']) or 0
    end
    local step = step_of(priority)
    local list = rk
    if step ~= 0 then list = rk .. sep .. step end
    redis.call('RPUSH', list, raw)
    restored = restored + 1
  end
end
return restored
"""

# KEYS: the holds index (one shard's). ARGV: the cutoff (holds filled at or before it are
# put back), the most holds to put back in one call. A member is JSON [hold, list]: the
# hold's messages, oldest first, go back onto the tail of the list they came from, the
# oldest last, so that they are the next taken, in their order. Returns the number of
# messages put back.
_RESTORE_HOLDS = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local restored = 0
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local ok, names = pcall(cjson.decode, member)
  if ok and type(names) == 'table' and type(names[1]) == 'string'
      and type(names[2]) == 'string' then
    while redis.call('LMOVE', names[1], names[2], 'RIGHT', 'RIGHT') do
      restored = restored + 1
    end
  end
end
return restored
"""

# Messages restored per shard and call: a sweep that finds more calls again.
BATCH = 1000


class Restorer:
    """Restores the messages of dead workers: their holds, and on a cluster what they
    held in kombu's unacknowledged hash of every shard."""

    def __init__(self, client: Any, space: KeySpace, visibility_timeout_s: float) -> None:
        self.space = space
        self.visibility_timeout_s = visibility_timeout_s
        self._script = client.register_script(_RESTORE)
        self._holds = client.register_script(_RESTORE_HOLDS)

    def sweep(self) -> int:
        """Restore every message held past the visibility timeout; how many were."""
        cutoff = repr(time.time() - self.visibility_timeout_s)
        restored = 0
        for tag in self.space.tags:
            unacked, index, _, _, holds = self.space.bookkeeping(tag)
            # A call takes up to BATCH holds and counts messages: each hold holds at
            # least one, so a call that counts fewer than BATCH has put back every due
            # hold, and one that counts more calls again (at worst once for nothing).
            restored += _in_calls(self._holds, [holds], [cutoff, BATCH])
            if self.space.sharded:
                args = [cutoff, BATCH, tag, PRIORITY_SEPARATOR, *PRIORITY_STEPS]
                restored += _in_calls(self._script, [unacked, index], args)
        return restored


def _in_calls(script: Callable[..., Any], keys: list[str], args: list[Any]) -> int:
    """Call a restore script until a call restores less than a full batch; the total."""
    total = 0
    while True:
        count = int(script(keys=keys, args=args))
        total += count
        if count < BATCH:
            return total
