"""A whole local stack on one machine: Redis (embedded unless one is configured and
reachable), the model zoo (exported on first run), and worker processes.

Used by ``aimass up`` (in the foreground until Ctrl-C) and ``aimass demo``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

from aimass.embedded_redis import RedisServer, stop_process
from aimass.protocol.connections import connect
from aimass.protocol.heartbeats import live_heartbeats
from aimass.worker.repository import ModelRepository

DEMO_MODELS = ("digits", "digits-gan")


def aimass_argv() -> list[str]:
    """How to run this installation's ``aimass`` command in a child process."""
    return [sys.executable, "-m", "aimass.cli"]


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
        self.workers: list[subprocess.Popen[bytes]] = []

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)  # type: ignore[call-overload]

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
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
        self.say(f"Models: {', '.join(missing)} not in {self.options.repository}; "
                 "training and exporting them (first run only)")
        command = [*aimass_argv(), "export", "zoo", "--repository",
                   str(self.options.repository), "--only", ",".join(missing)]
        if self.options.quick:
            command.append("--quick")
        done = subprocess.run(command, env=self._env())
        if done.returncode != 0:
            raise RuntimeError(f"exporting the zoo failed (exit {done.returncode}); "
                               f"run `{' '.join(command[2:])}` to see why")

    def _start_workers(self) -> None:
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        for index in range(self.options.workers):
            args = [*aimass_argv(), "worker", "--repository", str(self.options.repository),
                    "--devices", self.options.devices, *self.options.worker_args]
            if self.options.metrics_port:
                args += ["--metrics-port", str(self.options.metrics_port + index)]
            with (logs / f"worker-{index}.log").open("wb") as log:
                # A session of their own: Ctrl-C reaches only us, and we stop them in order.
                self.workers.append(subprocess.Popen(args, env=self._env(), stdout=log,
                                                     stderr=subprocess.STDOUT,
                                                     start_new_session=True))

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["REDIS_URL"] = self.redis_url
        return env

    def _wait_ready(self, timeout: float = 300.0) -> None:
        pids = {p.pid for p in self.workers}
        deadline = time.monotonic() + timeout
        client = connect(self.redis_url)
        try:
            while time.monotonic() < deadline:
                dead = [p for p in self.workers if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"a worker exited with {dead[0].returncode}; its log is "
                                       f"in {self.folder / 'logs'}")
                ready = {beat["pid"] for beat in live_heartbeats(client)
                         if beat.get("pid") in pids and beat.get("ready")}
                if len(ready) == len(pids):
                    return
                time.sleep(0.2)
        finally:
            client.close()
        raise RuntimeError(f"workers not ready after {timeout:.0f} s; logs in {self.folder}")

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
        lines.append(f"  try         REDIS_URL={self.redis_url} aimass classify IMAGE.png "
                     "--model digits")
        return "\n".join(lines)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.workers)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the workers (they finish their batches), then stop Redis if ours."""
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # all at once: they stop in parallel
        deadline = time.monotonic() + timeout
        for process in self.workers:
            stop_process(process, max(0.1, deadline - time.monotonic()), signum=None)
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
