"""Reading pub/sub messages without losing one that is still arriving.

redis-py 8 reads a message with the same timeout as the wait for it: a call with a
short timeout (0 to drain) that catches a large message half-arrived raises
``TimeoutError`` and drops that message. ``next_message`` waits with the caller's
timeout, but reads a message that has begun to arrive with a timeout of its own.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.client import PubSub

READ_S = 10.0  # for the rest of a message whose first bytes are here


def next_message(pubsub: PubSub, timeout: float) -> dict[str, Any] | None:
    """``pubsub.get_message(timeout=timeout)``, except that a message that has begun to
    arrive is read whole."""
    connection = pubsub.connection
    if connection is None or not pubsub.subscribed:
        return pubsub.get_message(timeout=timeout)
    try:
        ready = connection.can_read(timeout=timeout)
    except redis.ConnectionError:
        return pubsub.get_message(timeout=timeout)  # reconnects and resubscribes
    if not ready:
        return None
    return pubsub.get_message(timeout=READ_S)
