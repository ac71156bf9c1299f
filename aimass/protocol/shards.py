"""The key space a client works in: today's names on one Redis, and on a Redis Cluster
the sharded names of ``aimass.protocol.keys.KeySpace``, with the shard count that the
cluster records (``SHARDS_KEY``) so that every worker, producer and reader agrees.

The key space is read once per client and kept on it: ``keyspace(client)``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from aimass.protocol.connections import UnsupportedRedis
from aimass.protocol.keys import PLAIN, SHARDS_KEY, KeySpace, shard_tags
from aimass.protocol.pubsub import next_message

# How long one poll of one node's sharded subscriptions may wait.
POLL_S = 0.05

_ATTRIBUTE = "_aimass_keyspace"


def is_cluster_client(client: Any) -> bool:
    """Whether ``client`` is redis-py's cluster client (sync or asyncio)."""
    return hasattr(client, "get_primaries") and hasattr(client, "get_node_from_key")


def keyspace(client: Any, wanted: int = 0) -> KeySpace:
    """The key space of the Redis behind ``client``; on a cluster, records the shard
    count (``wanted``, or one per primary when 0) unless one is recorded already."""
    known: KeySpace | None = getattr(client, _ATTRIBUTE, None)
    if known is not None:
        return known
    if not is_cluster_client(client):
        return PLAIN
    default = wanted or len(client.get_primaries())
    client.set(SHARDS_KEY, default, nx=True)
    return _keep(client, client.get(SHARDS_KEY), wanted)


async def keyspace_async(client: Any, wanted: int = 0) -> KeySpace:
    """``keyspace`` for an asyncio client."""
    known: KeySpace | None = getattr(client, _ATTRIBUTE, None)
    if known is not None:
        return known
    if not is_cluster_client(client):
        return PLAIN
    await client.initialize()
    default = wanted or len(client.get_primaries())
    await client.set(SHARDS_KEY, default, nx=True)
    return _keep(client, await client.get(SHARDS_KEY), wanted)


def _keep(client: Any, recorded: Any, wanted: int) -> KeySpace:
    count = int(recorded)
    if wanted and wanted != count:
        raise UnsupportedRedis(
            f"AIMASS_QUEUE_SHARDS={wanted}, but this cluster's queues have {count} shards "
            f"(recorded under {SHARDS_KEY} by the first worker or producer): use {count}, "
            "or leave it unset"
        )
    space = KeySpace(shard_tags(count))
    setattr(client, _ATTRIBUTE, space)
    return space


# Pub/sub and reads over many keys, alike on one Redis and on a cluster: there, results
# and wake-ups go by sharded pub/sub (SPUBLISH, SSUBSCRIBE), so that a message goes to
# its shard's nodes only, and an MGET is cut by slot.


def subscribe(pubsub: Any, space: KeySpace, channels: Sequence[str]) -> None:
    if channels:
        (pubsub.ssubscribe if space.sharded else pubsub.subscribe)(*channels)


def unsubscribe(pubsub: Any, space: KeySpace, channels: Sequence[str]) -> None:
    if channels:
        (pubsub.sunsubscribe if space.sharded else pubsub.unsubscribe)(*channels)


def next_published(pubsub: Any, space: KeySpace, timeout: float) -> dict[str, Any] | None:
    """The next message on a subscribed channel, waiting up to ``timeout``."""
    if not space.sharded:
        return next_message(pubsub, timeout)
    deadline = time.monotonic() + timeout
    while True:  # redis-py's cluster pub/sub polls one node a call, in turn
        left = deadline - time.monotonic()
        message = pubsub.get_sharded_message(
            ignore_subscribe_messages=True, timeout=min(max(left, 0.0), POLL_S)
        )
        if message is not None or left <= 0:
            return message


def mget(client: Any, keys: Sequence[str]) -> list[Any]:
    """The values of these keys: MGET on one Redis, one MGET per slot on a cluster."""
    if not keys:
        return []
    if is_cluster_client(client):
        return list(client.mget_nonatomic(list(keys)))
    return list(client.mget(list(keys)))


async def next_published_async(
    pubsub: Any, space: KeySpace, timeout: float
) -> dict[str, Any] | None:
    """``next_published`` for asyncio."""
    if not space.sharded:
        return await pubsub.get_message(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        message = await pubsub.get_sharded_message(
            ignore_subscribe_messages=True, timeout=min(max(left, 0.0), POLL_S)
        )
        if message is not None or left <= 0:
            return message


async def subscribe_async(pubsub: Any, space: KeySpace, channels: Sequence[str]) -> None:
    """``subscribe`` for asyncio."""
    if channels:
        await (pubsub.ssubscribe if space.sharded else pubsub.subscribe)(*channels)


async def unsubscribe_async(pubsub: Any, space: KeySpace, channels: Sequence[str]) -> None:
    """``unsubscribe`` for asyncio."""
    if channels:
        await (pubsub.sunsubscribe if space.sharded else pubsub.unsubscribe)(*channels)


async def mget_async(client: Any, space: KeySpace, keys: Sequence[str]) -> list[Any]:
    """``mget`` for asyncio."""
    if not keys:
        return []
    if space.sharded:
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))
