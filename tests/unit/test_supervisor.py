"""The supervisor of a host's worker processes, driven with fake processes and a fake
clock: restarts with a growing backoff, reset once a child has run a while; signals
forwarded; nothing restarted once stopping."""

from __future__ import annotations

import signal

import pytest

from aimass.worker.supervisor import (
    MAX_BACKOFF_S,
    STABLE_AFTER_S,
    Child,
    Supervisor,
    cpu_shares,
)

pytestmark = pytest.mark.unit


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)
        self.returncode = -signum

    def wait(self) -> int:
        assert self.returncode is not None
        return self.returncode


class Harness:
    def __init__(self, count: int = 2) -> None:
        self.now = 0.0
        self.launched: list[tuple[str, FakeProcess]] = []
        children = [Child(f"cpu.{i}", ["aimass", "worker"], {}) for i in range(count)]
        self.supervisor = Supervisor(children, launch=self.launch, clock=lambda: self.now)
        for child in children:
            self.supervisor._start(child)

    def launch(self, child: Child) -> FakeProcess:
        process = FakeProcess(100 + len(self.launched))
        self.launched.append((child.label, process))
        return process  # type: ignore[return-value]

    def at(self, now: float) -> None:
        self.now = now
        self.supervisor.step()


def test_a_child_that_dies_is_restarted_after_a_backoff_that_grows() -> None:
    h = Harness()
    first = h.supervisor.children[0]
    restarted_at = []
    for _ in range(4):
        assert first.process is not None
        first.process.returncode = -9  # killed
        h.at(h.now + 0.1)
        assert first.process is None  # waiting out the backoff
        assert first.restart_at is not None
        restarted_at.append(first.restart_at - h.now)
        h.at(first.restart_at)
        assert first.process is not None and first.process.poll() is None
    assert restarted_at == [1.0, 2.0, 4.0, 8.0]
    assert first.restarts == 4 and first.exit_codes == [-9] * 4
    # The other child was never touched.
    assert [label for label, _ in h.launched].count("cpu.1") == 1


def test_the_backoff_resets_once_a_child_has_run_a_while_and_is_capped() -> None:
    h = Harness(1)
    child = h.supervisor.children[0]
    child.backoff_s = MAX_BACKOFF_S
    assert child.process is not None
    child.process.returncode = 1
    h.at(h.now + 1)
    assert child.restart_at == pytest.approx(h.now + MAX_BACKOFF_S)
    h.at(child.restart_at)
    assert child.backoff_s == MAX_BACKOFF_S  # doubled, but capped
    assert child.process is not None
    child.process.returncode = 1
    h.at(h.now + STABLE_AFTER_S + 1)
    assert child.restart_at == pytest.approx(h.now + 1.0)


def test_stop_forwards_the_signal_and_restarts_nothing() -> None:
    h = Harness()
    h.supervisor.stop(signal.SIGTERM)
    assert all(p.signals == [signal.SIGTERM] for _, p in h.launched)
    h.at(h.now + 100)
    assert len(h.launched) == 2
    assert h.supervisor._wait_all() == signal.SIGTERM


def test_cores_are_split_between_children_only_when_each_gets_two() -> None:
    assert cpu_shares(4, list(range(16))) == [set(range(i * 4, i * 4 + 4)) for i in range(4)]
    assert cpu_shares(2, [0, 1, 2]) == [None, None]
    assert cpu_shares(3, [0, 1, 2, 3, 4, 5, 6]) == [{0, 1}, {2, 3}, {4, 5}]
