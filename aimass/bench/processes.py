"""The processes a benchmark starts, as a user starts them, and what they cost.

``aimass worker`` and ``celery -A aimass.bench.naive worker`` run as subprocesses of
the benchmark; ``CpuSampler`` records every process's CPU time and memory ten times a
second so that a window's CPU can be read afterwards for any interval.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from aimass.bench.models import BenchModel
from aimass.embedded_redis import stop_process
from aimass.launcher import WorkerProcess, child_env


@dataclass
class Service:
    """One long-running child process with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    providers: list[str] = field(default_factory=list)  # its session's, where it says
    worker: WorkerProcess | None = None  # how ``aimass worker`` was launched

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (warm shutdown), then SIGKILL if it does not exit in time."""
        stop_process(self.process, timeout)

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )


def _spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Service:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Service(name, process, log_path)


def start_aimass_worker(
    redis_url: str,
    model: BenchModel,
    provider: str,
    log_dir: Path,
    procs_per_gpu: int | None = None,
    timeout: float = 180.0,
    stragglers_s: float = 60.0,
) -> Service:
    """``aimass worker`` serving one model; returns once every process it started says
    ready, or ``stragglers_s`` after the first did (``serving_heartbeats`` then tells
    how many serve)."""
    args = [
        "--repository",
        str(model.repository),
        "--models",
        model.name,
        "--devices",
        "cpu" if provider == "cpu" else "auto",
    ]
    if procs_per_gpu is not None:
        args += ["--procs-per-gpu", str(procs_per_gpu)]
    name = f"aimass-worker-{model.name}"
    worker = WorkerProcess(redis_url, args, log_dir / f"{name}.log").launch()
    assert worker.process is not None
    try:
        # Some processes may serve and others not: the results record how many.
        worker.wait_ready(timeout, stragglers_s=stragglers_s)
    except RuntimeError:
        worker.stop()
        raise
    return Service(name, worker.process, worker.log_path, worker=worker)


@dataclass
class BulkJobs:
    """One-image jobs for a worker on the digits stand-in, sent as the broker
    benchmarks send them: ``Client.submit_many``, then ``Client.wait``."""

    client: Any  # aimass.producer.Client
    images: list[Any]

    def make(self, count: int) -> list[Any]:
        """``count`` jobs, the benchmark's images in turn."""
        from aimass.bench.load import one_image_jobs

        return one_image_jobs(self.images, count)

    def answer(self, submissions: list[Any], timeout_s: float) -> None:
        """Send them all, and wait for every result."""
        self.client.wait(self.client.submit_many(submissions), timeout=timeout_s)


@contextlib.contextmanager
def digits_worker(
    redis_url: str, root: Path, encoding: str = "uint8", log_dir: Path | None = None
) -> Iterator[BulkJobs]:
    """A real ``aimass worker --devices cpu`` on the digits stand-in (written under
    ``root``) against the Redis at ``redis_url``, and a client to send it one-image jobs
    of ``encoding`` (``uint8`` pixels or ``png``); the worker is stopped after."""
    from aimass.bench.load import bulk_images
    from aimass.bench.models import find_model
    from aimass.producer.client import Client

    model = find_model("digits", root / "empty", root / "models")
    images = bulk_images(encoding, model.input_shape)
    worker = start_aimass_worker(redis_url, model, "cpu", log_dir or root)
    try:
        with Client(redis_url) as client:
            yield BulkJobs(client, images)
    finally:
        worker.stop()


def serving_heartbeats(redis_url: str, service: Service) -> list[dict[str, Any]]:
    """The heartbeats of the service's processes that say ready, by pid, as JSON."""
    return [beat.as_json() for beat in service.worker.serving()] if service.worker else []


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def start_naive_worker(
    redis_url: str,
    model: BenchModel,
    provider: str,
    pool: str,
    concurrency: int | None,
    log_dir: Path,
    timeout: float = 180.0,
) -> Service:
    """``celery -A aimass.bench.naive worker``; returns once it has answered a job."""
    argv = [sys.executable, "-m", "celery", "-A", "aimass.bench.naive", "worker", f"--pool={pool}"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    env = child_env(
        redis_url, AIMASS_BENCH_MODEL_FILE=str(model.model_file), AIMASS_BENCH_PROVIDER=provider
    )
    service = _spawn(f"naive-worker-{model.name}", argv, env, log_dir)
    from celery import Celery

    probe = Celery("naive-probe", broker=redis_url, backend=redis_url)
    try:
        zeros = base64.b64encode(bytes(4 * _volume(model.input_shape))).decode("ascii")
        pending = probe.send_task(
            "bench.naive.classify", kwargs={"tensor": zeros, "shape": model.input_shape}
        )
        deadline = time.monotonic() + timeout
        while not pending.ready():
            service.check()
            if time.monotonic() > deadline:
                service.stop()
                raise RuntimeError(
                    f"naive worker did not answer in {timeout} s:\n{service.log_tail()}"
                )
            time.sleep(0.1)
        service.providers = list(pending.get(timeout=1).get("providers", []))
        pending.forget()
    finally:
        probe.close()
    return service


def _volume(shape: Sequence[int]) -> int:
    volume = 1
    for dim in shape:
        volume *= dim
    return volume


@dataclass
class Producer:
    """One producer process (``python -m aimass.bench.load``), driven by JSON lines."""

    process: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    @classmethod
    def start(cls, spec: dict[str, Any], log_dir: Path) -> Producer:
        index = spec["producer_index"]
        log = (log_dir / f"producer-{spec['system']}-{index}.log").open("a")
        process = subprocess.Popen(
            [sys.executable, "-m", "aimass.bench.load", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=child_env(spec["redis_url"]),
        )
        log.close()
        producer = cls(process)
        threading.Thread(target=producer._read, daemon=True).start()
        return producer

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        stream: IO[str] | None = self.process.stdout
        assert stream is not None
        for line in stream:
            with self._lock:
                self.events.append(json.loads(line))
                self._lock.notify_all()
        with self._lock:
            self.events.append({"event": "eof"})
            self._lock.notify_all()

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        """The next event of this kind (events are consumed in order)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for index, item in enumerate(self.events):
                    if item["event"] in (event, "eof"):
                        del self.events[: index + 1]
                        if item["event"] == "eof":
                            raise RuntimeError(
                                f"producer {self.pid} exited (code {self.process.poll()}) "
                                f"while waiting for {event!r}; see its log"
                            )
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"producer {self.pid}: no {event!r} in {timeout} s")
                self._lock.wait(left)

    def close(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            try:
                self.send({"cmd": "exit"})
                self.process.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


MACHINE = -1  # the pseudo-pid of the whole machine's busy CPU time


@dataclass
class _Track:
    pid: int
    tree: bool  # include the process's children (prefork pools)
    times: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)


class CpuSampler:
    """Samples CPU seconds and RSS of named processes every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._tracks: dict[str, _Track] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cpu-sampler")
        self._thread.start()

    def track(self, name: str, pid: int, tree: bool = False) -> None:
        with self._lock:
            self._tracks[name] = _Track(pid, tree)
        self.sample()

    def track_machine(self) -> None:
        """Track the whole machine's busy CPU as ``machine`` (to see the neighbours)."""
        self.track("machine", MACHINE)

    def untrack(self, name: str) -> None:
        with self._lock:
            self._tracks.pop(name, None)

    def sample(self) -> None:
        now = time.monotonic()
        with self._lock:
            for track in self._tracks.values():
                reading = self._read(track)
                if reading is not None:
                    track.times.append(now)
                    track.cpu_s.append(reading[0])
                    track.rss.append(reading[1])

    def _read(self, track: _Track) -> tuple[float, int] | None:
        if track.pid == MACHINE:
            t = psutil.cpu_times()
            busy = t.user + t.system + sum(getattr(t, n, 0.0) for n in ("nice", "irq", "softirq"))
            return busy, psutil.virtual_memory().used
        procs = [self._process(track.pid)]
        if track.tree and procs[0] is not None:
            procs += [self._process(c.pid) for c in _children(track.pid)]
        cpu, rss = 0.0, 0
        for proc in procs:
            if proc is None:
                continue
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
        return (cpu, rss) if procs[0] is not None else None

    def _process(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        if proc is None:
            try:
                proc = self._procs[pid] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                return None
        return proc

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_seconds(self, name: str, t0: float, t1: float) -> float:
        """CPU seconds the process (tree) used between two ``time.monotonic()`` instants."""
        with self._lock:
            track = self._tracks[name]
            return _at(track.times, track.cpu_s, t1) - _at(track.times, track.cpu_s, t0)

    def max_rss(self, name: str, t0: float = 0.0, t1: float = float("inf")) -> int:
        with self._lock:
            track = self._tracks[name]
            values = [r for t, r in zip(track.times, track.rss, strict=True) if t0 <= t <= t1]
            return max(values, default=track.rss[-1] if track.rss else 0)


def _at(times: list[float], values: list[float], t: float) -> float:
    """The value at ``t``, interpolated linearly between samples."""
    if not times:
        return 0.0
    i = bisect.bisect_left(times, t)
    if i == 0:
        return values[0]
    if i == len(times):
        return values[-1]
    t_a, t_b = times[i - 1], times[i]
    share = (t - t_a) / (t_b - t_a) if t_b > t_a else 1.0
    return values[i - 1] + share * (values[i] - values[i - 1])
