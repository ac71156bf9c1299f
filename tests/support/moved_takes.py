"""Counting moved takes (worker/held.py) on a test's Redis or cluster."""

from __future__ import annotations

from typing import Any

import redis


def moves(store: redis.Redis) -> int:
    """Moved takes so far: each trims the list it moved from (LTRIM), nothing else does."""
    stats = store.info("commandstats")
    return int(stats.get("cmdstat_ltrim", {}).get("calls", 0))


def moves_on(cluster: Any) -> int:
    """``moves`` summed over a cluster's primaries."""
    stats = cluster.info("commandstats", target_nodes=cluster.get_primaries())
    return sum(int(node.get("cmdstat_ltrim", {}).get("calls", 0)) for node in stats.values())
