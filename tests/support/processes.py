"""Real worker processes, started the way a user starts them: ``aimass worker ...``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from aimass.embedded_redis import stop_process
from aimass.protocol.connections import connect
from aimass.protocol.heartbeats import live_heartbeats


def aimass_command() -> list[str]:
    """The installed ``aimass`` console script next to this interpreter."""
    script = Path(sys.executable).parent / "aimass"
    if script.exists():
        return [str(script)]
    found = shutil.which("aimass")
    if found:
        return [found]
    return [sys.executable, "-m", "aimass.cli"]


def child_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIMASS_")}
    env["REDIS_URL"] = redis_url
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class WorkerProcess:
    """One ``aimass worker`` process and its log file."""

    def __init__(self, redis_url: str, repository: Path, log_path: Path,
                 args: list[str] | None = None, env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> None:
        self.redis_url = redis_url
        self.repository = repository
        self.log_path = log_path
        self.args = args or []
        self.env = env or {}
        # What runs as ``aimass``: the console script, or a wrapper that takes its arguments.
        self.command = command or aimass_command()
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [*self.command, "worker", "--repository", str(self.repository),
                "--devices", "cpu", *self.args]

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv(),
            env=child_env(self.redis_url, **self.env), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def heartbeat(self) -> dict | None:
        client = connect(self.redis_url)
        try:
            return next((beat for beat in live_heartbeats(client)
                         if beat.get("pid") == self.pid), None)
        finally:
            client.close()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            info = self.heartbeat()
            if info and info.get("ready"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to clean up."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (warm shutdown), then SIGKILL if it does not exit in time."""
        if self.process is None:
            return None
        return stop_process(self.process, timeout)
