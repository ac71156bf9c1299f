"""The broker benchmark's pinning of Redis to a core of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from aimass.bench.broker import own_core

needs_two_cores = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="pinning needs two cores this process may use",
)

# A stand-in for redis-server: a process with a second thread, as Redis has.
TWO_THREADS = (
    "import threading, time; threading.Thread(target=time.sleep, args=(60,)).start(); "
    "time.sleep(60)"
)


def _threads(pid: int) -> list[int]:
    return [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]


@needs_two_cores
def test_redis_gets_its_core_alone_and_what_starts_meanwhile_the_others() -> None:
    mine = os.sched_getaffinity(0)
    core = max(mine)
    server = subprocess.Popen([sys.executable, "-c", TWO_THREADS])
    try:
        deadline = time.monotonic() + 10
        while len(_threads(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with own_core(SimpleNamespace(process=server), core):
            assert [os.sched_getaffinity(t) for t in _threads(server.pid)] == [{core}] * 2
            assert os.sched_getaffinity(0) == mine - {core}
            child = subprocess.run(
                [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                capture_output=True,
                text=True,
                check=True,
            )
            assert child.stdout.strip() == str(sorted(mine - {core}))
        assert os.sched_getaffinity(0) == mine
    finally:
        server.kill()
        server.wait()


@needs_two_cores
def test_a_core_this_process_may_not_use_is_refused_with_the_ones_it_may() -> None:
    mine = os.sched_getaffinity(0)
    refused = pytest.raises(ValueError, match=r"expected one of this process's cores")
    with refused, own_core(SimpleNamespace(process=None), max(mine) + 1):
        pass
    assert os.sched_getaffinity(0) == mine


def test_no_core_pins_nothing() -> None:
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with own_core(SimpleNamespace(process=None), None):
        pass
    if mine is not None:
        assert os.sched_getaffinity(0) == mine
