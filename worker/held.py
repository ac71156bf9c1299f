"""A large take in two steps: its messages moved inside Redis, then recorded.

The take script (``queue_scripts.TAKE``) pops each message into Lua, reads its tag and
job id there and builds kombu's entry around it; Lua hashes every byte of each string it
makes, and in a large take that is most of what the take costs Redis. Where the worker
is behind (its last take was full and left jobs waiting), the take is of at least
``AIMASS_MOVE_TAKES_AT`` jobs, and the first list that holds jobs holds more than it may
carry, the script moves the oldest of them onto a hold of the worker's instead (``SORT
... BY nosort DESC STORE`` and ``LTRIM``: no message enters Lua), read in the same round
trip. This module reads them as the script would have, and records them in kombu's
bookkeeping, byte for byte as the script does, in one transaction that also reads their
marks (cancelled, runs died in) and deletes the hold: until that transaction a message
is on the hold, afterwards in kombu's unacked hash, never nowhere. A worker that dies
between the two steps leaves its hold in the holds index, from which any worker puts it
back after the visibility timeout (``restore.Restorer``).

A moved take of 28 costs the worker 0.35-0.4 ms of CPU more than a one-step take (0.2
ms), half of it redis-py building the record's commands argument by argument: only full
takes repay it, and a closed loop whose takes empty the queue loses jobs/s by it, so
every other take stays one step (docs/performance.md, an eleventh and a fifteenth look).
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aimass.protocol.queues import ENCODER_MARK
from aimass.worker.queue_scripts import MARKS

# A marked message begins so, its delivery tag and job id read by their place: see
# queue_scripts.TAKE's marked().
_LEAD = ENCODER_MARK + b'{"properties":{"delivery_tag":"'
_BETWEEN = b'","correlation_id":"'
# Lua's %s: C's isspace.
_BODY = re.compile(rb'"body"[\t\n\v\f\r ]*:[\t\n\v\f\r ]*"')
# How Lua's cjson writes the bytes of a string (the rest as they are).
_CJSON_ESCAPES = {
    **{c: b"\\u%04x" % c for c in range(32)},
    8: b"\\b",
    9: b"\\t",
    10: b"\\n",
    12: b"\\f",
    13: b"\\r",
    34: b'\\"',
    47: b"\\/",
    92: b"\\\\",
    127: b"\\u007f",
}
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"/\\\x7f]')
_FAILED = object()
_CJSON_DEPTH = 1000  # cjson's decode_max_depth
_SHARD = re.compile(r"\{.*\}$")


@dataclass(frozen=True)
class Read:
    """What the take script reads of a message: its delivery tag (None: it has none, and
    a fresh one is made), the exchange and routing key of kombu's entry, and its job id
    (None: not found)."""

    tag: bytes | None
    exchange: bytes
    routing_key: bytes
    job_id: bytes | None


def read(raw: bytes, base: bytes, max_bytes: int) -> Read | None:
    """A message as the take script reads it; None where it is not a kombu envelope
    (the script does not record such a message: kombu could not restore it)."""
    if len(raw) > max_bytes:
        return Read(None, b"", base, None)  # not decoded: the worker fails it unread
    found = _marked(raw)
    if found is not None:
        return Read(found[0], b"", base, found[1])
    return _decoded(raw, base)


def _marked(raw: bytes) -> tuple[bytes, bytes] | None:
    if not raw.startswith(_LEAD):
        return None
    t = len(_LEAD)
    u = raw.find(b'"', t)
    if u <= t or raw[u : u + len(_BETWEEN)] != _BETWEEN:
        return None
    i = u + len(_BETWEEN)
    j = raw.find(b'"', i)
    if j <= i:
        return None
    return raw[t:u], raw[i:j]


def _decoded(raw: bytes, base: bytes) -> Read | None:
    msg = _envelope(raw)
    if not isinstance(msg, (dict, list)):  # a Lua table is either
        return None
    tag: bytes | None = None
    exchange, routing_key, job_id = b"", base, None
    try:
        props = msg.get("properties") if isinstance(msg, dict) else None
        if isinstance(props, dict):
            if isinstance(props.get("delivery_tag"), str):
                tag = _bytes(props["delivery_tag"])
            info = props.get("delivery_info")
            if isinstance(info, dict):
                if isinstance(info.get("exchange"), str):
                    exchange = _bytes(info["exchange"])
                if isinstance(info.get("routing_key"), str) and info["routing_key"] != "":
                    routing_key = _bytes(info["routing_key"])
        headers = msg.get("headers") if isinstance(msg, dict) else None
        if isinstance(headers, dict) and isinstance(headers.get("id"), str) and headers["id"]:
            job_id = _bytes(headers["id"])
    except UnicodeEncodeError:  # a lone surrogate's escape, which cjson refuses to decode
        return None
    return Read(tag, exchange, routing_key, job_id)


def _envelope(raw: bytes) -> Any:
    """The message decoded as cjson decodes it, without its body where it can be: see
    queue_scripts.TAKE's envelope()."""
    found = _BODY.search(raw)
    if found:
        close = raw.find(b'"', found.end())
        if close >= 0:
            msg = _cjson(raw[: found.end()] + raw[close:])
            if isinstance(msg, (dict, list)):
                return msg
    return _cjson(raw)


def _cjson(data: bytes) -> Any:
    """Lua's cjson takes any bytes in a string, control characters unescaped, and arrays
    and objects nested up to 1,000 deep, where Python's recursion limit may stop first."""
    text = data.decode("utf-8", "surrogateescape")
    try:
        return json.loads(text, strict=False)
    except ValueError:
        return _FAILED
    except RecursionError:
        pass
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + _CJSON_DEPTH)
    try:
        value = json.loads(text, strict=False)
    except (ValueError, RecursionError):
        return _FAILED
    finally:
        sys.setrecursionlimit(limit)
    return value if _depth(value) <= _CJSON_DEPTH else _FAILED


def _depth(value: Any) -> int:
    """How deep arrays and objects nest in a decoded value (without recursing)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend(
                (v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def cjson_string(value: bytes) -> bytes:
    """``value`` as Lua's cjson encodes a string."""
    if not _NEEDS_ESCAPE.search(value):
        return b'"' + value + b'"'
    return b'"' + b"".join(_CJSON_ESCAPES.get(c, bytes((c,))) for c in value) + b'"'


def padded(tag: bytes) -> bytes:
    """A tag as it is recorded: past 64 bytes (queue_scripts.TAKE's long())."""
    return tag + b"#" + b"-" * max(64 - len(tag), 0)


@dataclass(frozen=True)
class Recorded:
    """A held message as recorded: its padded tag ("" where it is not recorded), its job's
    runs died in so far, and whether its job was cancelled."""

    tag: bytes
    raw: bytes
    runs: int
    cancelled: bool


def record(
    client: Any,
    keys: Sequence[str],
    hold: str,
    member: bytes,
    messages: Sequence[bytes],
    base: bytes,
    now: float,
    max_bytes: int,
    marks_args: Sequence[Any],
) -> list[Recorded]:
    """Record the messages read from ``hold`` in kombu's bookkeeping (``keys``: the shard's
    unacked hash, index, runs hash, tag counter and holds index), read their marks and
    delete the hold, in one transaction. ``marks_args``: MARKS's arguments before the
    ids. Raises what Redis raises; the hold is then still there to record again."""
    entries: dict[bytes, bytes] = {}
    tails: dict[tuple[bytes, bytes], bytes] = {}
    tags: list[bytes] = []
    ids: list[bytes] = []
    places: list[int] = []
    shard = _SHARD.search(keys[3])  # a fresh tag carries its shard's, as the script's do
    for raw in messages:
        seen = read(raw, base, max_bytes)
        if seen is None:
            tags.append(b"")
            continue
        tag = seen.tag
        if tag is None:  # a fresh one, as unique as the script's counter makes them
            tag = f"aimass-{uuid.uuid4().hex}{shard.group() if shard else ''}".encode()
        tag = padded(tag)
        tail = tails.get((seen.exchange, seen.routing_key))
        if tail is None:
            tail = b"," + cjson_string(seen.exchange) + b"," + cjson_string(seen.routing_key) + b"]"
            tails[(seen.exchange, seen.routing_key)] = tail
        entries[tag] = b"[" + raw + tail
        tags.append(tag)
        if seen.job_id is not None:
            ids.append(seen.job_id)
            places.append(len(tags) - 1)
    unacked, index, runs_hash, _, holds = keys[:5]
    pipe = client.pipeline(transaction=True)
    if entries:
        pipe.hset(unacked, mapping=entries)
        pipe.zadd(index, dict.fromkeys(entries, now))
    pipe.execute_command("EVAL", MARKS, 1, runs_hash, *marks_args, *ids)
    pipe.delete(hold)
    pipe.zrem(holds, member)
    replies = pipe.execute()
    marks = replies[2 if entries else 0]
    runs = [0] * len(tags)
    cancelled = [False] * len(tags)
    for n, place in enumerate(places):
        runs[place] = int(marks[2 * n])
        cancelled[place] = bool(int(marks[2 * n + 1]))
    return [
        Recorded(tag, raw, runs[n], cancelled[n])
        for n, (tag, raw) in enumerate(zip(tags, messages, strict=True))
    ]
