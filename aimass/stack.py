"""A whole local stack on one machine: Redis (embedded unless one is configured and
reachable), the model zoo (exported on first run), and worker processes.

Used by ``aimass up`` (in the foreground until Ctrl-C) and ``aimass demo``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

from aimass.embedded_redis import RedisServer
from aimass.launcher import WorkerProcess, aimass_command, child_env
from aimass.protocol.connections import connect
from aimass.worker.repository import ModelRepository

DEMO_MODELS = ("digits", "digits-gan")


def reachable(url: str, timeout: float = 2.0) -> bool:
    client = connect(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@dataclass
class StackOptions:
    repository: Path
    workers: int = 1
    devices: str = "auto"
    redis_url: str | None = None  # REDIS_URL, used when reachable
    zoo: tuple[str, ...] = DEMO_MODELS  # published when the repository lacks them
    quick: bool = False  # quick training (for tests)
    metrics_port: int = 0  # first worker's port; the others count up
    worker_args: list[str] = field(default_factory=list)


class LocalStack:
    """Starts what is missing, remembers what it started, and stops exactly that."""

    def __init__(self, options: StackOptions, out: object = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.folder = Path(tempfile.mkdtemp(prefix="aimass-stack-"))
        self.redis_server: RedisServer | None = None
        self.redis_url = ""
        self.workers: list[WorkerProcess] = []

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)  # type: ignore[call-overload]

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._start_redis()
        self._publish_zoo()
        self._start_workers()
        self._wait_ready()
        self.say(self.summary())

    def _start_redis(self) -> None:
        url = self.options.redis_url
        if url and reachable(url):
            self.redis_url = url
            self.say(f"Redis: using {_masked(url)}")
            return
        if url:
            self.say(f"Redis: {_masked(url)} is not reachable; starting an embedded one")
        self.redis_server = RedisServer(self.folder / "redis").start()
        self.redis_url = self.redis_server.url
        self.say(f"Redis: embedded redis-server at {self.redis_url}")

    def _publish_zoo(self) -> None:
        repository = ModelRepository(self.options.repository)
        missing = [name for name in self.options.zoo if not repository.versions(name)]
        if not missing:
            return
        self.say(
            f"Models: {', '.join(missing)} not in {self.options.repository}; "
            "training and exporting them (first run only)"
        )
        args = [
            "export",
            "zoo",
            "--repository",
            str(self.options.repository),
            "--only",
            ",".join(missing),
        ]
        if self.options.quick:
            args.append("--quick")
        done = subprocess.run([*aimass_command(), *args], env=child_env(self.redis_url))
        if done.returncode != 0:
            raise RuntimeError(
                f"exporting the zoo failed (exit {done.returncode}); "
                f"run `aimass {' '.join(args)}` to see why"
            )

    def _start_workers(self) -> None:
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        for index in range(self.options.workers):
            args = [
                "--repository",
                str(self.options.repository),
                "--devices",
                self.options.devices,
                *self.options.worker_args,
            ]
            if self.options.metrics_port:
                args += ["--metrics-port", str(self.options.metrics_port + index)]
            worker = WorkerProcess(
                self.redis_url, args, logs / f"worker-{index}.log", own_session=True
            )
            self.workers.append(worker.launch())

    def _wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.wait_ready(max(0.1, deadline - time.monotonic()))

    def summary(self) -> str:
        lines = [
            "aimass is up:",
            f"  Redis       {_masked(self.redis_url)}"
            + (" (embedded)" if self.redis_server else ""),
            f"  repository  {self.options.repository.resolve()}",
            f"  workers     {len(self.workers)} (pids "
            f"{', '.join(str(p.pid) for p in self.workers)}), logs in {self.folder / 'logs'}",
        ]
        if self.options.metrics_port:
            ports = [self.options.metrics_port + i for i in range(len(self.workers))]
            urls = ", ".join(f"http://127.0.0.1:{port}/metrics" for port in ports)
            lines.append(f"  metrics     {urls}")
        lines.append(
            f"  try         REDIS_URL={self.redis_url} aimass classify IMAGE.png --model digits"
        )
        return "\n".join(lines)

    def alive(self) -> bool:
        return all(worker.alive() for worker in self.workers)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the workers (they finish their batches), then stop Redis if ours."""
        for worker in self.workers:
            worker.terminate()  # all at once: they stop in parallel
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.stop(max(0.1, deadline - time.monotonic()))
        if self.redis_server is not None:
            self.redis_server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _masked(url: str) -> str:
    """A Redis URL without its password, for printing."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0] if ":" in credentials else ""
    return f"{scheme}://{user}:***@{host}"
