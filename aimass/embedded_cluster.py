"""A local Redis Cluster of child processes: ``primaries`` primaries, each with
``replicas`` replicas, on free ports, made one cluster by ``redis-cli --cluster create``;
for the tests and the broker benchmark (``python -m aimass.bench.cluster --primaries 3``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from aimass.embedded_redis import RedisServer, find_redis_server, free_port

# How long a primary may be unreachable before its replica takes over: short, so that a
# failover in a test takes seconds.
NODE_TIMEOUT_MS = 1000


# Sharded pub/sub (SPUBLISH, SSUBSCRIBE), which aimass uses on a cluster, came in 7.0.
CLUSTER_MINIMUM = (7, 0)


def find_redis_cli(server: str) -> str:
    """redis-cli, beside the cluster's redis-server or from the PATH."""
    beside = Path(server).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-cli")
    if found:
        return found
    raise RuntimeError("redis-cli not found: it creates the cluster (install redis-tools)")


class RedisCluster:
    """The nodes of a local cluster; ``url`` is its ``redis+cluster://`` URL."""

    def __init__(self, folder: Path, primaries: int = 3, replicas: int = 1) -> None:
        self.folder = Path(folder)
        self.primaries = primaries
        self.replicas = replicas
        self.binary = find_redis_server(CLUSTER_MINIMUM)
        self.nodes = [
            RedisServer(
                self.folder / f"node-{i}",
                binary=self.binary,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    "--cluster-port",
                    str(free_port()),
                    # A replica takes over however long it was cut off: a test kills
                    # primaries while their replicas are busy.
                    "--cluster-replica-validity-factor",
                    "0",
                    # A replica syncs at once, not after kombu-like 5 s of waiting for
                    # others: a primary killed early must have a replica with its data.
                    "--repl-diskless-sync-delay",
                    "0",
                ],
            )
            for i in range(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    def start(self, timeout: float = 60.0) -> RedisCluster:
        """Start every node and make them one cluster; where that fails, the nodes
        started so far are stopped before the error goes up."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> RedisCluster:
        for node in self.nodes:
            node.start()
        if self.primaries * (1 + self.replicas) < 3:  # below what redis-cli creates
            return self._start_small(timeout)
        subprocess.run(
            [
                find_redis_cli(self.binary),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        self.wait_ok(timeout)
        return self

    def _start_small(self, timeout: float) -> RedisCluster:
        """One primary holding every slot (redis-cli creates 3 primaries at least)."""
        (node,) = self.nodes
        with redis.Redis(port=node.port) as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        self.wait_ok(timeout)
        return self

    def live_nodes(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Wait until every live node sees the cluster whole (cluster_state:ok) with
        ``primaries`` primaries serving all slots, and every live replica is in sync
        with its primary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._ok(node) for node in self.live_nodes()):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the cluster in {self.folder} is not whole after {timeout} s")

    def _ok(self, node: RedisServer) -> bool:
        try:
            with redis.Redis(port=node.port, socket_timeout=2) as client:
                info = client.cluster("info")
                replication = client.info("replication")
        except redis.RedisError:
            return False
        if isinstance(info, dict):
            fields = {k: str(v) for k, v in info.items()}
        else:
            text = info.decode() if isinstance(info, bytes) else str(info)
            fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        in_sync = replication["role"] == "master" or (
            replication.get("master_link_status") == "up"
            and not replication.get("master_sync_in_progress")
        )
        return (
            in_sync
            and fields.get("cluster_state") == "ok"
            and fields.get("cluster_size") == str(self.primaries)
        )

    def primary_ports(self) -> list[int]:
        """The ports of the nodes that are primaries now."""
        ports = []
        for node in self.live_nodes():
            try:
                with redis.Redis(port=node.port, socket_timeout=2) as client:
                    if client.info("replication")["role"] == "master":
                        ports.append(node.port)
            except redis.RedisError:
                continue
        return ports

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
