"""Cancelling a job: ``Job.cancel``, ``AsyncJob.cancel`` and ``aimass cancel``.

One Redis script, so that a cancel and a worker's answer cannot both win: unless the
job already has a final result, it stores the cancelled record (REVOKED,
``JobCancelled``) and publishes it to the job's waiters, marks the job cancelled for
workers that take it later (they run nothing and store nothing), and publishes its id
on the cancel channel, so that a worker holding it in a batch not yet run drops it.
A job whose batch has started runs to its end, but its answer is not stored: the first
final record wins, and the cancel was first.
"""

from __future__ import annotations

from typing import Any

from aimass.protocol.keys import CANCEL_CHANNEL, PLAIN, KeySpace
from aimass.protocol.records import ResultRecord, ResultState
from aimass.protocol.shards import keyspace

# KEYS: result key, cancelled key. ARGV: the cancelled record, ttl, job id, the command
# that publishes the record to the job's waiters (PUBLISH; SPUBLISH on a cluster).
# Returns 1 when cancelled, 0 when the job had finished already.
CANCEL_SCRIPT = (
    """
local current = redis.call('GET', KEYS[1])
if current and not string.find(string.sub(current, 1, 32), '"""
    + ResultState.started
    + """', 1,
                               true) then
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[2], '1', 'EX', ttl)
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call(ARGV[4], KEYS[1], ARGV[1])
redis.call('PUBLISH', '"""
    + CANCEL_CHANNEL
    + """', ARGV[3])
return 1
"""
)


def cancel_call(job_id: str, ttl_s: int, space: KeySpace = PLAIN) -> tuple[list[str], list[Any]]:
    """The script's keys and arguments for one job."""
    return (
        [space.result_key(job_id), space.cancelled_key(job_id)],
        [
            ResultRecord.cancelled(job_id).encode(),
            ttl_s,
            job_id,
            "SPUBLISH" if space.sharded else "PUBLISH",
        ],
    )


def cancel(client: Any, job_id: str, ttl_s: int) -> bool:
    """Cancel a job unless it has finished; True when it was cancelled."""
    keys, args = cancel_call(job_id, ttl_s, keyspace(client))
    return bool(client.eval(CANCEL_SCRIPT, len(keys), *keys, *args))
