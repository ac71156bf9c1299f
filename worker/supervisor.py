"""The worker processes of one host: several per GPU, each pinned, restarted when it dies.

One Python process cannot keep a large GPU busy: decoding, validating, preprocessing
and storing results take a core or two per process. ``aimass worker`` therefore starts
``procs_per_gpu`` children on each device (each its own Celery worker with its own
sessions), pins each to its GPU and to a share of the cores, forwards SIGTERM and SIGINT
to them, and restarts a child that exits on its own, after a backoff that grows while it
keeps failing, so that a GPU is never left idle behind a container that looks healthy.

With a metrics port P, the supervisor answers on P for the whole container: ``/readyz``
is ready only while every child is (it asks each on its own port, P+1, P+2, ...),
``/livez`` while the supervisor runs, and ``/metrics`` counts restarts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from aimass.worker.endpoints import Checks, Endpoints, probe

log = logging.getLogger(__name__)

MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
# A child that ran this long before it died is restarted after the shortest backoff.
STABLE_AFTER_S = 60.0


@dataclass
class Child:
    """One worker process the supervisor keeps running."""

    label: str  # "gpu0.1": device and index on it
    argv: list[str]
    env: dict[str, str]
    cpus: set[int] | None = None  # the cores it is pinned to; None: not pinned
    port: int = 0  # where it serves /metrics, /livez and /readyz; 0: nowhere
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = MIN_BACKOFF_S
    restart_at: float | None = None  # when a dead child is started again
    exit_codes: list[int] = field(default_factory=list)


Launch = Callable[[Child], "subprocess.Popen[bytes]"]


def _launch(child: Child) -> subprocess.Popen[bytes]:
    """Start a child, then pin it. Not in a ``preexec_fn``: that runs Python between fork
    and exec, which is not safe once the supervisor runs threads (its probe server).
    Popen returns once the child has exec'd, before the new interpreter has started a
    thread of its own, and every thread it starts later inherits the pinning."""
    process = subprocess.Popen(child.argv, env=child.env)
    if child.cpus:
        try:
            os.sched_setaffinity(process.pid, child.cpus)
        except OSError as exc:  # gone already, or a core taken away: it runs unpinned
            log.warning(
                "could not pin worker %s to cores %s: %s", child.label, sorted(child.cpus), exc
            )
    return process


def cpu_shares(count: int, cores: Sequence[int] | None = None) -> list[set[int] | None]:
    """A disjoint set of cores for each of ``count`` children, or ``None`` each (no
    pinning) when there are fewer than two cores per child."""
    if cores is None:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    per_child = len(cores) // max(1, count)
    if per_child < 2:
        return [None] * count
    return [set(cores[i * per_child : (i + 1) * per_child]) for i in range(count)]


class Supervisor:
    """Runs children until told to stop; ``run`` returns the worst exit code seen at stop."""

    def __init__(
        self,
        children: list[Child],
        launch: Launch = _launch,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = 0.2,
    ) -> None:
        self.children = children
        self.launch = launch
        self.clock = clock
        self.poll_s = poll_s
        self.stopping = False
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "aimass_worker_restarts",
            "Worker processes started again after they exited on their own",
            ["process"],
            registry=self.registry,
        )
        self.running = Gauge(
            "aimass_worker_processes",
            "Worker processes of this container, by state (running, or waiting to be restarted)",
            ["state"],
            registry=self.registry,
        )
        self.endpoints = Endpoints(self.registry, self.live, self.ready)

    def run(self, port: int = 0) -> int:
        """Start the children, serve the container's endpoints on ``port`` (0: none), and
        keep the children running until SIGTERM or SIGINT."""
        for child in self.children:
            self._start(child)
        if port:
            self.endpoints.serve(port)
        previous = {
            sig: signal.signal(sig, self._forward) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            while not self.stopping:
                self.step()
                time.sleep(self.poll_s)
            return self._wait_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.endpoints.close()

    def step(self) -> None:
        """Notice children that exited, and start those whose backoff has passed; nothing
        once stopping (the children are exiting because they were told to)."""
        if self.stopping:
            return
        now = self.clock()
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                self._died(child, now)
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self.restarts.labels(child.label).inc()
                self._start(child)
        waiting = sum(child.process is None for child in self.children)
        self.running.labels("running").set(len(self.children) - waiting)
        self.running.labels("waiting").set(waiting)

    def live(self) -> Checks:
        return {"supervisor": True}  # it answers: it is alive; each child has its own

    def ready(self) -> Checks:
        """Ready while every child is: one restarting makes the container unready."""
        return {f"worker {child.label}": self._child_ready(child) for child in self.children}

    def _child_ready(self, child: Child) -> bool | str:
        if child.process is None or child.process.poll() is not None:
            return "exited; waiting to be restarted"
        if not child.port:
            return True  # nowhere to ask: running is all that can be known
        return probe(f"http://127.0.0.1:{child.port}/readyz")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        self.stopping = True
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signum)

    def _forward(self, signum: int, frame: Any) -> None:
        self.stop(signum)

    def _start(self, child: Child) -> None:
        child.process = self.launch(child)
        child.started_at = self.clock()
        child.restart_at = None
        log.info("worker %s started (pid %d)", child.label, child.process.pid)

    def _died(self, child: Child, now: float) -> None:
        assert child.process is not None
        code = child.process.returncode
        child.exit_codes.append(code)
        ran_s = now - child.started_at
        if ran_s >= STABLE_AFTER_S:
            child.backoff_s = MIN_BACKOFF_S
        child.process = None
        child.restart_at = now + child.backoff_s
        log.error(
            "worker %s exited with %s after %.1f s; restarting it in %.0f s (restart %d)",
            child.label,
            _describe_exit(code),
            ran_s,
            child.backoff_s,
            child.restarts + 1,
        )
        child.backoff_s = min(MAX_BACKOFF_S, child.backoff_s * 2)

    def _wait_all(self) -> int:
        codes = [child.process.wait() for child in self.children if child.process is not None]
        return max((abs(code) for code in codes), default=0)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
