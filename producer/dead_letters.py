"""Dead letters: jobs parked after their worker died each time it ran them.

A job whose worker died in ``AIMASS_MAX_DELIVERIES`` of its runs is not run again: at
its next delivery the worker stores its failure (``WorkerLost``) and keeps its message,
as it was queued, in the model's dead-letter list (``aimass:dead:<model>``).
``aimass dead list`` shows them, ``aimass dead retry`` sends them again (their failure
is forgotten, their runs counted from zero), ``aimass dead purge`` drops them.

Only the standard library is imported at module level, so ``aimass --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeadLetter:
    model: str
    job_id: str | None
    task: str | None
    priority: int
    raw: bytes  # the message, exactly as it was queued
    shard: str = ""  # the hash tag of its shard, on a cluster (keys.KeySpace)


def dead_letters(client: Any, model: str | None = None) -> list[DeadLetter]:
    """The parked jobs of one model, or of every model, oldest first."""
    from aimass.protocol.keys import DEAD_PREFIX
    from aimass.protocol.shards import keyspace

    keys = (
        keyspace(client).dead_letter_keys(model)
        if model
        else sorted(
            key.decode() if isinstance(key, bytes) else key
            for key in client.scan_iter(match=f"{DEAD_PREFIX}*")
        )
    )
    letters = []
    for key in keys:
        name, brace, tag = key.removeprefix(DEAD_PREFIX).partition("{")
        for raw in reversed(client.lrange(key, 0, -1)):  # LPUSHed: the oldest is last
            letters.append(_letter(name, raw, brace + tag))
    return letters


def _letter(model: str, raw: bytes, shard: str) -> DeadLetter:
    from aimass.protocol.messages import InvalidMessage, TaskMessage

    try:
        message = TaskMessage.decode(raw)
    except InvalidMessage:
        return DeadLetter(model, None, None, 0, raw, shard)
    priority = message.properties.get("priority")
    return DeadLetter(
        model,
        message.task_id,
        message.task,
        priority if isinstance(priority, int) else 0,
        raw,
        shard,
    )


def retry(client: Any, letters: list[DeadLetter]) -> int:
    """Send parked jobs again, each in one transaction (on its shard's slot, on a
    cluster): off the dead-letter list, its failure and delivery count forgotten, back
    on its queue, idle workers woken."""
    from aimass.protocol.keys import RESULT_KEY_PREFIX, RUNS_HASH, dead_letter_key
    from aimass.protocol.messages import message_list
    from aimass.protocol.shards import keyspace

    space = keyspace(client)
    sent = 0
    for letter in letters:
        tag = letter.shard
        pipe = client.pipeline(transaction=True)
        pipe.lrem(dead_letter_key(f"{letter.model}{tag}"), 1, letter.raw)
        if letter.job_id:
            pipe.delete(f"{RESULT_KEY_PREFIX}{tag}{letter.job_id}")
            pipe.hdel(RUNS_HASH + tag, letter.job_id)
        pipe.lpush(message_list(letter.model, min(max(letter.priority, 0), 9), tag), letter.raw)
        wake = space.wake_channel(letter.model, tag)
        (pipe.spublish if space.sharded else pipe.publish)(wake, b"1")
        removed = pipe.execute()[0]
        sent += int(removed)
    return sent


def purge(client: Any, model: str | None = None) -> int:
    """Drop parked jobs (their stored failures stay until they expire)."""
    from aimass.protocol.shards import keyspace

    models = [model] if model else sorted({letter.model for letter in dead_letters(client)})
    dropped = 0
    for name in models:
        for key in keyspace(client).dead_letter_keys(name):
            pipe = client.pipeline(transaction=True)
            pipe.llen(key)
            pipe.delete(key)
            dropped += int(pipe.execute()[0])
    return dropped


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dead = subparsers.add_parser(
        "dead",
        help="list, retry or purge jobs parked after their worker died",
        description="Jobs whose worker died each time it ran them (AIMASS_MAX_DELIVERIES "
        "times) are parked in their model's dead-letter list. Redis: "
        "$REDIS_URL.",
    )
    action = dead.add_subparsers(dest="dead_command", required=True, metavar="{list,retry,purge}")
    for name, helptext in (
        ("list", "list parked jobs"),
        ("retry", "send parked jobs again"),
        ("purge", "drop parked jobs"),
    ):
        command = action.add_parser(name, help=helptext, description=helptext)
        command.add_argument("--model", help="only this model's (default: every model's)")
        if name != "purge":
            command.add_argument("job_ids", nargs="*", help="only these jobs")
        if name == "list":
            command.add_argument("--json", action="store_true", help="print JSON")
        command.set_defaults(handler=run_dead)


def run_dead(args: argparse.Namespace) -> int:
    import redis

    from aimass.protocol.connections import connect
    from aimass.protocol.settings import ClientSettings

    client = connect(ClientSettings.from_env().redis_url)
    try:
        if args.dead_command == "purge":
            print(f"dropped {purge(client, args.model)} parked jobs")
            return 0
        letters = [
            letter
            for letter in dead_letters(client, args.model)
            if not args.job_ids or letter.job_id in args.job_ids
        ]
        if args.dead_command == "retry":
            print(f"sent {retry(client, letters)} parked jobs again")
            return 0
        _print(letters, args.json)
        return 0
    except redis.RedisError as exc:
        print(f"aimass dead: Redis unreachable ({exc})", file=sys.stderr)
        return 1
    finally:
        client.close()


def _print(letters: list[DeadLetter], as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                [
                    {"model": d.model, "job_id": d.job_id, "task": d.task, "priority": d.priority}
                    for d in letters
                ],
                indent=2,
            )
        )
        return
    if not letters:
        print("no parked jobs")
    for letter in letters:
        print(f"{letter.model:<16} {letter.job_id or '(no id)':<38} {letter.task or '-'}")
