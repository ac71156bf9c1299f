"""Starting ``aimass worker`` as a child process, waiting for its heartbeat, stopping it.

One launcher for the local stack (``aimass up``, ``aimass demo``), the benchmark and the
tests, so that the three start workers the same way.

The child's environment is the parent's, ``AIMASS_*`` variables included (a user's tuning
applies to the workers they start), with ``REDIS_URL`` set to the stack's Redis, output
unbuffered, and a caller's extra variables on top. A caller that must not pass its own
``AIMASS_*`` on clears them from its environment first (the test suite does, at start).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aimass.embedded_redis import stop_process
from aimass.protocol.connections import connect
from aimass.protocol.heartbeats import Heartbeat, live_heartbeats


def aimass_command() -> list[str]:
    """How to run this installation's ``aimass`` command: the console script next to
    this interpreter, else the one on PATH, else ``python -m aimass.cli``."""
    script = Path(sys.executable).parent / "aimass"
    if script.exists():
        return [str(script)]
    found = shutil.which("aimass")
    return [found] if found else [sys.executable, "-m", "aimass.cli"]


def child_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a child process: ours, with this Redis and ``extra``."""
    env = dict(os.environ)
    env["REDIS_URL"] = redis_url
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class WorkerProcess:
    """One ``aimass worker`` process (a single worker, or a supervisor of several) and its
    log file."""

    def __init__(
        self,
        redis_url: str,
        args: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        own_session: bool = False,
    ) -> None:
        self.redis_url = redis_url
        self.args = list(args)
        self.log_path = log_path
        self.env = env or {}
        # What runs as ``aimass``: the console script, or a wrapper that takes its arguments.
        self.command = command or aimass_command()
        # A session of its own: a Ctrl-C in the terminal reaches only the parent, which
        # stops its workers in order.
        self.own_session = own_session
        self.process: subprocess.Popen[bytes] | None = None
        self._terminated = False

    def argv(self) -> list[str]:
        return [*self.command, "worker", *self.args]

    def launch(self) -> WorkerProcess:
        """Start the process; do not wait for it."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(),
                env=child_env(self.redis_url, **self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )
        return self

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        """Start the process and wait until it serves (``wait_ready``)."""
        self.launch()
        self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "not launched"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self, chars: int = 6000) -> str:
        """The end of its log."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def heartbeat(self) -> Heartbeat | None:
        """This process's own live heartbeat, if any (a supervisor has none)."""
        return next((beat for beat in self._heartbeats() if beat.pid == self.pid), None)

    def serving(self) -> list[Heartbeat]:
        """The heartbeats that say ready of this process and of its children, by pid."""
        pids = {self.pid, *_descendants(self.pid)}
        ready = [b for b in self._heartbeats() if b.pid in pids and b.ready]
        return sorted(ready, key=lambda beat: beat.pid)

    def wait_ready(self, timeout: float, stragglers_s: float | None = None) -> None:
        """Wait until every serving process says ready in its heartbeat: this one, or each
        child of a supervisor. With ``stragglers_s``, settle for those ready that long
        after the first was (``serving()`` then says how many). Raises ``RuntimeError``,
        with the end of the log, if the process exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_running()
            ready = len(self.serving())
            if ready and ready >= self._expected():
                return
            if ready and stragglers_s is not None:
                deadline = min(deadline, time.monotonic() + stragglers_s)
            time.sleep(0.1)
        if stragglers_s is not None and self.serving():
            return
        raise RuntimeError(f"aimass worker not ready after {timeout} s:\n{self.log()}")

    def terminate(self) -> None:
        """SIGTERM (warm shutdown: it finishes its batches); do not wait."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (unless sent already), then SIGKILL if it does not exit in time."""
        if self.process is None:
            return None
        return stop_process(
            self.process, timeout, signum=None if self._terminated else signal.SIGTERM
        )

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to clean up."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def _check_running(self) -> None:
        assert self.process is not None, "not launched"
        if self.process.poll() is not None:
            raise RuntimeError(
                f"aimass worker exited with {self.process.returncode}:\n{self.log()}"
            )

    def _expected(self) -> int:
        """How many processes will serve: a supervisor's children, else this one."""
        if self.heartbeat() is not None:
            return 1
        return max(1, len(_descendants(self.pid, recursive=False)))

    def _heartbeats(self) -> list[Heartbeat]:
        client = connect(self.redis_url)
        try:
            return live_heartbeats(client)
        finally:
            client.close()


def _descendants(pid: int, recursive: bool = True) -> list[int]:
    import psutil  # the worker's dependency, as is starting a worker

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=recursive)]
    except psutil.NoSuchProcess:
        return []
