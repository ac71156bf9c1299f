"""The visibility-timeout restore on a Redis Cluster: kombu's sweeper knows one Redis and
its one unacknowledged hash; a cluster has one per shard, which this sweeps.

Each worker sweeps every shard now and then (``Restorer.sweep``): one script call per
shard puts each message held for longer than the visibility timeout back at the head of
its shard's priority list, as kombu does on one Redis (which keeps doing it there). The
script is atomic per message, so that workers sweeping at once restore a message once.
"""

from __future__ import annotations

import time
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

# Messages restored per shard and call: a sweep that finds more calls again.
BATCH = 1000


class Restorer:
    """Restores the messages of dead workers on every shard of a cluster."""

    def __init__(self, client: Any, space: KeySpace, visibility_timeout_s: float) -> None:
        self.space = space
        self.visibility_timeout_s = visibility_timeout_s
        self._script = client.register_script(_RESTORE)

    def sweep(self) -> int:
        """Restore every message held past the visibility timeout; how many were."""
        cutoff = repr(time.time() - self.visibility_timeout_s)
        restored = 0
        for tag in self.space.tags:
            unacked, index = self.space.bookkeeping(tag)[:2]
            while True:
                args = [cutoff, BATCH, tag, PRIORITY_SEPARATOR, *PRIORITY_STEPS]
                count = int(self._script(keys=[unacked, index], args=args))
                restored += count
                if count < BATCH:
                    break
        return restored
