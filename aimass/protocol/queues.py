"""A model's queue as every sender and consumer sees it: its depth over its priority
lists, and the mark that the aimass client's messages carry on them."""

from __future__ import annotations

from typing import Any

import redis

# JSON whitespace that the aimass client puts before each message it pushes (the
# message stays the same JSON to every reader). It says: encoded by aimass's own
# encoder, so valid JSON, and its job id and delivery tag plain strings (no quotes or
# backslashes). The take script reads those two by their place instead of decoding the
# message, which is most of what a take costs Redis (worker/queue_scripts.py): the message
# starts with its properties, the delivery tag and the correlation id (the job id) first
# (TaskMessage.envelope). Unmarked messages (Celery, other languages, a message restored
# by kombu), and marked ones laid out otherwise (an older client's), are decoded.
ENCODER_MARK = b"\t \t"


def queue_depth(client: redis.Redis, model: str) -> int:
    """Jobs waiting in a model's queue, all priorities and shards (one LLEN pipeline)."""
    from aimass.protocol.shards import keyspace

    space = keyspace(client)
    return sum(
        list_lengths(client, [name for tag in space.tags for name in space.lists(model, tag)])
    )


def list_lengths(client: Any, keys: list[str]) -> list[int]:
    """The lengths of these lists, in one round trip (per node, on a cluster)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    return [int(n) for n in pipe.execute()]
