"""A model's queue as every sender and consumer sees it: its depth over its priority
lists."""

from __future__ import annotations

import redis

from aimass.protocol.keys import priority_queue_names


def queue_depth(client: redis.Redis, model: str) -> int:
    """Jobs waiting in a model's queue, all priorities (one LLEN pipeline)."""
    pipe = client.pipeline(transaction=False)
    for name in priority_queue_names(model):
        pipe.llen(name)
    return sum(int(n) for n in pipe.execute())
