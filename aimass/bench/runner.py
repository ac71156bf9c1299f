"""One benchmark run: raw ONNX Runtime, the naive Celery worker and aimass, per model.

Everything runs on this machine: a private Redis, the workers and the producers as
subprocesses. Each measurement is repeated ``rounds`` times (levels interleaved, so
that a noisy moment hits one round of each rather than every round of one) and the
medians are reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from aimass.bench.broker import BrokerCost, BrokerMeter
from aimass.bench.gpu import GpuSampler
from aimass.bench.levels import aggregate_level, combine_windows, summarize_raw
from aimass.bench.machine import machine_info
from aimass.bench.models import BenchModel, find_model
from aimass.bench.processes import (
    CpuSampler,
    Producer,
    Service,
    child_env,
    serving_heartbeats,
    start_aimass_worker,
    start_naive_worker,
)
from aimass.embedded_redis import RedisServer


@dataclass(frozen=True)
class BenchConfig:
    """What ``aimass bench`` was asked to do (see ``aimass bench --help``)."""

    models: list[str]
    concurrency: list[int]
    rounds: int = 3
    duration_s: float = 3.0
    warmup_s: float = 1.0
    jobs: int = 0  # cap on the jobs measured per window (0: time-boxed only)
    producers: int = 1
    provider: str = "cpu"
    repository: Path = Path("models")
    allow_synthetic: bool = False
    images_per_job: int = 16  # the multi-image run (digits; AlexNet too on cuda); 0 skips it
    multi_concurrency: int = 8
    naive_pool: str = "solo"
    naive_concurrency: int | None = None  # Celery's default
    procs_per_gpu: int | None = None  # aimass worker --procs-per-gpu; None: its default
    raw_batch_sizes: list[int] = field(default_factory=lambda: [2**i for i in range(8)])
    raw_seconds: float = 0.5
    bulk_jobs: int = 0  # one-image jobs sent at once on digits, per round and system; 0 skips
    skip: tuple[str, ...] = ()  # systems not to run: raw, naive, aimass
    log_dir: Path | None = None
    command: str | None = None  # as typed, for the record


# The longest a round in bulk may take: a plain Celery worker drains some 300-700 one-image
# jobs a second on a small machine.
BULK_TIMEOUT_S = 600.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """Owns the Redis server, the CPU and GPU samplers and the temporary folders of one
    run."""

    def __init__(self, config: BenchConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.log_dir = config.log_dir or workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(workdir / "redis").start()
        self.sampler = CpuSampler()
        assert self.redis.process is not None
        self.sampler.track("redis", self.redis.process.pid)
        self.sampler.track("bench", os.getpid())
        self.sampler.track_machine()
        self._meter_client = redis.Redis.from_url(self.redis.url)
        self.broker = BrokerMeter(self._meter_client)
        # Only cuda runs put load on a GPU; on the CPU its figures would be a neighbour's.
        self.gpu = GpuSampler() if config.provider == "cuda" else None

    def close(self) -> None:
        self.sampler.stop()
        self._meter_client.close()
        if self.gpu is not None:
            self.gpu.stop()
        self.redis.stop()

    def run(self) -> dict[str, Any]:
        started = time.time()
        load_before = os.getloadavg()
        synthetic_root = self.workdir / "synthetic" if self.config.allow_synthetic else None
        models = [
            find_model(name, self.config.repository, synthetic_root) for name in self.config.models
        ]
        results = {model.name: self.bench_model(model) for model in models}
        return {
            "machine": machine_info(self.config.provider, self.redis.url),
            "config": _config_json(self.config),
            "started_at": started,
            "duration_s": time.time() - started,
            "load_average_before": list(load_before),
            "load_average_after": list(os.getloadavg()),
            "models": results,
        }

    def bench_model(self, model: BenchModel) -> dict[str, Any]:
        """Every round measures raw, then naive, then aimass, so that a noisy moment on a
        shared machine hits one round of each rather than every round of one."""
        log(
            f"== {model.name} ({'synthetic stand-in' if model.synthetic else 'exported'}, "
            f"{model.model_file.stat().st_size / 1e6:.1f} MB)"
        )
        systems: list[System] = []
        raw_rounds: list[dict[str, Any]] = []
        try:
            for name in ("naive", "aimass"):
                if name not in self.config.skip:
                    systems.append(self._start_system(name, model))
            for index in range(self.config.rounds):
                if "raw" not in self.config.skip:
                    raw_rounds.append(self.raw_round(model, index))
                for system in systems:
                    self.system_round(system, systems, index)
                    if self._runs_bulk(model):
                        self.bulk_round(system, systems, index)
            rss = {system.name: self.sampler.max_rss(system.track) for system in systems}
        finally:
            for system in systems:
                self._stop_system(system)
            self._flush()
        result: dict[str, Any] = {"model": model.describe()}
        if raw_rounds:
            result["raw"] = summarize_raw(raw_rounds)
        for system in systems:
            result[system.name] = {
                "levels": [aggregate_level(system.windows[key]) for key in system.plan],
                "worker_rss_bytes": rss[system.name],
                **system.details,
            }
            if system.bulk:
                result[system.name]["bulk"] = aggregate_level(system.bulk)
        return result

    # -- raw ------------------------------------------------------------------------

    def raw_round(self, model: BenchModel, index: int) -> dict[str, Any]:
        spec = {
            "model_file": str(model.model_file),
            "input_name": model.manifest.inputs[0].name,
            "input_shape": model.input_shape,
            "batch_sizes": self.config.raw_batch_sizes,
            "seconds_per_size": self.config.raw_seconds,
            "gpu": 0 if self.config.provider == "cuda" else None,
        }
        done = subprocess.run(
            [sys.executable, "-m", "aimass.bench.raw", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=600,
            env=child_env(self.redis.url),
        )
        if done.returncode != 0:
            raise RuntimeError(f"raw measurement failed:\n{done.stderr[-4000:]}")
        measured: dict[str, Any] = json.loads(done.stdout)
        by_batch = measured["images_per_s_by_batch"]
        best = max(by_batch, key=lambda size: by_batch[size])
        log(
            f"   raw    round {index + 1} batch 1 {measured['batch1_latency_ms']:.2f} ms "
            f"{by_batch['1']:,.1f} img/s; best {by_batch[best]:,.1f} img/s at batch {best}"
        )
        return measured

    # -- naive and aimass --------------------------------------------------------------

    def _start_system(self, name: str, model: BenchModel) -> System:
        plan = [(c, 1) for c in self.config.concurrency]
        if name == "aimass" and self._runs_multi_image(model):
            plan.append((self.config.multi_concurrency, self.config.images_per_job))
        worker = self._start_worker(name, model)
        system = System(name, worker, plan)
        if name == "naive":
            system.details = {
                "pool": self.config.naive_pool,
                "pool_concurrency": self.config.naive_concurrency,
                "providers": worker.providers,
            }
            log(f"   naive worker: session on {', '.join(worker.providers) or '?'}")
            if self.config.provider == "cuda" and "CUDAExecutionProvider" not in worker.providers:
                log(
                    "   WARNING: the naive worker runs on the CPU, not the GPU: its ratios "
                    "compare against the wrong baseline"
                )
        else:
            system.details = self._aimass_details(worker)
        self.sampler.track(system.track, worker.pid, tree=True)
        system.producers = self._start_producers(name, model)
        return system

    def _runs_multi_image(self, model: BenchModel) -> bool:
        """Multi-image jobs for digits; on a GPU for AlexNet too, where large batches are
        what the worker's buckets are for. The CPU run stays as it was, so that its
        figures compare with earlier ones."""
        wanted = ("digits", "alexnet") if self.config.provider == "cuda" else ("digits",)
        return model.name in wanted and self.config.images_per_job > 1

    def _aimass_details(self, worker: Service) -> dict[str, Any]:
        """The processes serving, as their heartbeats describe them once all are ready."""
        keep = ("pid", "hostname", "device", "requested_device", "cpu_fallback", "models")
        workers = [
            {key: info.get(key) for key in keep}
            for info in serving_heartbeats(self.redis.url, worker)
        ]
        devices = sorted({str(w["device"]) for w in workers})
        log(f"   aimass worker: {len(workers)} process(es) ready on {', '.join(devices)}")
        return {
            "procs_per_gpu": self.config.procs_per_gpu,
            "worker_processes": len(workers),
            "workers": workers,
        }

    def _runs_bulk(self, model: BenchModel) -> bool:
        """Jobs in bulk on digits, the broker's sizing case (docs/performance.md): a
        backlog of small jobs, drained as fast as the worker can."""
        return model.name == "digits" and self.config.bulk_jobs > 0

    def _stop_system(self, system: System) -> None:
        for producer in system.producers:
            producer.close()
            self.sampler.untrack(f"producer-{producer.pid}")
        system.worker.stop()
        self.sampler.untrack(system.track)

    def system_round(self, system: System, systems: list[System], index: int) -> None:
        for concurrency, per_job in system.plan:
            level = self.run_level(system, systems, concurrency, per_job)
            system.windows[(concurrency, per_job)].append(level)
            cpu = level["cpu_cores"]
            log(
                f"   {system.name:<6} round {index + 1} c={concurrency:<3} x{per_job:<2} "
                f"{level['jobs_per_s']:>9,.1f} jobs/s {level['images_per_s']:>9,.1f} "
                f"img/s p50 {level['latency_ms']['p50']:.1f} ms "
                f"batch {level['mean_batch_size']:.1f} cpu worker/redis/producers "
                f"{cpu['worker']:.2f}/{cpu['redis']:.2f}/{cpu['producers']:.2f} "
                f"others {cpu['others']:.2f}"
            )

    def bulk_round(self, system: System, systems: list[System], index: int) -> None:
        """``bulk_jobs`` one-image jobs sent at once (shared among the producers) and
        waited for; the broker metered from before the send to the last result."""
        producers = system.producers
        share = -(-self.config.bulk_jobs // len(producers))
        t0 = time.monotonic()
        self.broker.start()
        for producer in producers:
            producer.send({"cmd": "bulk", "jobs": share, "timeout_s": BULK_TIMEOUT_S})
        results = [p.wait_for("result", timeout=BULK_TIMEOUT_S + 60) for p in producers]
        broker = self.broker.stop()
        t1 = max(result["t1"] for result in results)
        time.sleep(self.sampler.interval * 1.5)  # a sample after t1
        level = self._combine(system, systems, results, t0, t1, broker)
        system.bulk.append(level)
        cost = level["broker"]
        log(
            f"   {system.name:<6} round {index + 1} bulk {share * len(producers):,} "
            f"{level['jobs_per_s']:>9,.1f} jobs/s batch {level['mean_batch_size']:.1f} "
            f"Redis {cost['commands_per_job']:.1f} commands, {cost['cpu_us_per_job']:.1f} us "
            "CPU per job"
        )

    def _start_worker(self, system: str, model: BenchModel) -> Service:
        log(f"   starting the {system} worker")
        if system == "aimass":
            return start_aimass_worker(
                self.redis.url, model, self.config.provider, self.log_dir, self.config.procs_per_gpu
            )
        return start_naive_worker(
            self.redis.url,
            model,
            self.config.provider,
            self.config.naive_pool,
            self.config.naive_concurrency,
            self.log_dir,
        )

    def _start_producers(self, system: str, model: BenchModel) -> list[Producer]:
        producers = []
        for index in range(self.config.producers):
            spec = {
                "redis_url": self.redis.url,
                "system": system,
                "model": model.name,
                "input_shape": model.input_shape,
                "producer_index": index,
            }
            producers.append(Producer.start(spec, self.log_dir))
        for producer in producers:
            producer.wait_for("ready", timeout=60)
            self.sampler.track(f"producer-{producer.pid}", producer.pid)
        return producers

    def run_level(
        self, system: System, systems: list[System], concurrency: int, images_per_job: int
    ) -> dict[str, Any]:
        """One closed-loop window at one concurrency; the producers' results combined."""
        config, producers = self.config, system.producers
        t0 = time.monotonic() + config.warmup_s
        t_end = t0 + config.duration_s
        cap = -(-config.jobs // len(producers)) if config.jobs else 0
        for producer in producers:
            producer.send(
                {
                    "cmd": "run",
                    "concurrency": concurrency,
                    "t0": t0,
                    "t_end": t_end,
                    "cap": cap,
                    "images_per_job": images_per_job,
                }
            )
        time.sleep(max(0.0, t0 - time.monotonic()))
        self.broker.start()  # the broker's cost over the window, from its first instant
        closed = [p.wait_for("window", timeout=t_end - time.monotonic() + 120) for p in producers]
        broker = self.broker.stop()
        t1 = max(event["t1"] for event in closed)
        time.sleep(self.sampler.interval * 1.5)  # a sample after t1
        for producer in producers:
            producer.send({"cmd": "stop"})
        results = [p.wait_for("result", timeout=180) for p in producers]
        return self._combine(system, systems, results, t0, t1, broker)

    def _combine(
        self,
        system: System,
        systems: list[System],
        results: list[dict[str, Any]],
        t0: float,
        t1: float,
        broker: BrokerCost,
    ) -> dict[str, Any]:
        """A level's figures from its producers' results, over the window from t0 to t1
        (the worker checked alive after it)."""
        system.worker.check()
        gpu = self.gpu.window(t0, t1) if self.gpu is not None else None
        return combine_windows(
            results,
            self._cpu(system, systems, t0, t1),
            t1 - t0,
            self.sampler.max_rss(system.track, t0, t1),
            gpu,
            broker,
        )

    def _cpu(self, system: System, systems: list[System], t0: float, t1: float) -> dict[str, float]:
        seconds = {
            "worker": self.sampler.cpu_seconds(system.track, t0, t1),
            "redis": self.sampler.cpu_seconds("redis", t0, t1),
            "producers": sum(
                self.sampler.cpu_seconds(f"producer-{p.pid}", t0, t1) for p in system.producers
            ),
            "idle_workers": sum(
                self.sampler.cpu_seconds(other.track, t0, t1)
                for other in systems
                if other is not system
            ),
            "bench": self.sampler.cpu_seconds("bench", t0, t1),
        }
        machine = self.sampler.cpu_seconds("machine", t0, t1)
        seconds["others"] = max(0.0, machine - sum(seconds.values()))
        return seconds

    def _flush(self) -> None:
        client = redis.Redis.from_url(self.redis.url)
        try:
            client.flushall()
        finally:
            client.close()


@dataclass
class System:
    """naive or aimass while it is measured: its worker, producers and windows."""

    name: str
    worker: Service
    plan: list[tuple[int, int]]  # (jobs in flight per producer, images per job)
    producers: list[Producer] = field(default_factory=list)
    windows: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    bulk: list[dict[str, Any]] = field(default_factory=list)  # a level per round, in bulk

    def __post_init__(self) -> None:
        self.windows = {key: [] for key in self.plan}

    @property
    def track(self) -> str:
        return f"worker-{self.name}"


def _config_json(config: BenchConfig) -> dict[str, Any]:
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()}
    data["aimass_env"] = {k: v for k, v in os.environ.items() if k.startswith("AIMASS_")}
    return data


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run the whole benchmark in a temporary folder; return the results."""
    with tempfile.TemporaryDirectory(prefix="aimass-bench-") as tmp:
        bench = Bench(config, Path(tmp))
        try:
            return bench.run()
        finally:
            bench.close()
