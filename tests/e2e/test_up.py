"""``aimass up``: starts a whole stack, and stops it with nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.support.processes import aimass_command

pytestmark = pytest.mark.e2e


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_up_starts_embedded_redis_and_workers_then_stops_cleanly(
    model_repository: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [
                *aimass_command(),
                "up",
                "--repository",
                str(model_repository),
                "--workers",
                "2",
                "--devices",
                "cpu",
                "--zoo",
                "",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "Press Ctrl-C" not in log.read_text() and time.monotonic() < deadline:
            assert up.poll() is None, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert "embedded redis-server" in text and "workers     2" in text, text
        children = descendants(up.pid)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        assert "redis-server" in names and names.count(" worker ") >= 2, names
        up.send_signal(stop_signal)
        assert up.wait(60) == 0, log.read_text()
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if up.poll() is None:
            up.kill()
