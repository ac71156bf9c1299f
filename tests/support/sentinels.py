"""A Redis primary, a replica and three sentinels on free ports: a failover to test."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from aimass.embedded_redis import RedisServer, find_redis_server, free_port, stop_process

SERVICE = "aimass"


class SentinelSet:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.primary = RedisServer(folder / "primary", persistent=True)
        self.replica = RedisServer(
            folder / "replica",
            persistent=True,
            extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)],
        )
        self.ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica.start()
        for index, port in enumerate(self.ports):
            folder = self.folder / f"sentinel-{index}"
            folder.mkdir(parents=True)
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [
                        find_redis_server(),
                        str(config),
                        "--sentinel",
                        "--logfile",
                        str(folder / "sentinel.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        self.wait(
            lambda: self._replicas_known() and self._replica_in_sync(),
            30,
            "the sentinels to know the replica, in sync",
        )
        return self

    def primary_port(self) -> int:
        sentinel = redis.Redis(port=self.ports[0], socket_timeout=2)
        try:
            _, port = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        finally:
            sentinel.close()
        return int(port)

    def _replicas_known(self) -> bool:
        try:
            return all(
                redis.Redis(port=port, socket_timeout=2).sentinel_slaves(SERVICE)
                for port in self.ports
            )
        except redis.RedisError:
            return False

    def _replica_in_sync(self) -> bool:
        info = redis.Redis(port=self.replica.port).info("replication")
        return info.get("master_link_status") == "up"

    @staticmethod
    def wait(condition: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            stop_process(sentinel, 5)
        self.replica.stop()
        self.primary.stop()
