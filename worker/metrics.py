"""Prometheus metrics of one worker process (names and labels in docs/metrics.md).

Every series about a model carries its ``model`` and ``version`` labels, as Triton's do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aimass.protocol.records import ResultRecord
from aimass.worker.gpu import GpuReading

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MODEL = ["model", "version"]


class Metrics:
    """The worker's metrics, in a registry of their own (served by worker/endpoints.py)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter(
            "aimass_jobs",
            "Jobs settled, by model, version, kind and "
            "outcome; reason is the error type of a failed job",
            [*MODEL, "kind", "outcome", "reason"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "aimass_queue_wait_seconds",
            "From a job's arrival at the worker to the start of its batch",
            MODEL,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "aimass_inference_seconds",
            "session.run time per batch",
            MODEL,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "aimass_job_seconds",
            "From a job's arrival at the worker to its stored result",
            MODEL,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "aimass_batch_size",
            "Inputs per batch, by the bucket it "
            "ran at (padding included; the batch's own size where "
            "batches run exact sizes)",
            [*MODEL, "bucket"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "aimass_queue_depth",
            "Jobs waiting in a model's queue, by "
            "priority list (the queue's, as this worker sees it: "
            "aggregate workers with max)",
            [*MODEL, "priority"],
            registry=r,
        )
        self.oldest_age = Gauge(
            "aimass_oldest_job_age_seconds",
            "How long the next job to "
            "be taken from a model's queue has waited (jobs submitted "
            "with a submission marker, as the aimass client sends them)",
            MODEL,
            registry=r,
        )
        self.dead_letters = Gauge(
            "aimass_dead_letters",
            "Jobs parked in a model's "
            "dead-letter list after their worker died each time it ran "
            "them (aimass dead list)",
            MODEL,
            registry=r,
        )
        self.in_flight = Gauge(
            "aimass_jobs_in_flight", "Jobs taken from Redis and not yet settled", registry=r
        )
        self.ready = Gauge("aimass_ready", "1 when /readyz passes", registry=r)
        self.cpu_fallback = Gauge(
            "aimass_cpu_fallback",
            "1 when this process was asked to run on a GPU but runs on the CPU",
            registry=r,
        )
        self.gpu_utilization = Gauge(
            "aimass_gpu_utilization_ratio",
            "How much of the last sample period a kernel ran on the GPU (0-1)",
            ["gpu"],
            registry=r,
        )
        self.gpu_memory_used = Gauge(
            "aimass_gpu_memory_used_bytes", "GPU memory in use (all processes)", ["gpu"], registry=r
        )
        self.gpu_memory_total = Gauge(
            "aimass_gpu_memory_total_bytes", "GPU memory", ["gpu"], registry=r
        )
        self.model_info = Gauge(
            "aimass_model_info",
            "Served model versions (value 1)",
            [*MODEL, "kind", "provider"],
            registry=r,
        )

    def on_batch(
        self, model: str, version: int, size: int, run_size: int, inference_ms: float
    ) -> None:
        self.batch_size.labels(model, str(version), str(run_size)).observe(size)
        self.inference.labels(model, str(version)).observe(inference_ms / 1000.0)

    def on_settled(
        self,
        model: str,
        version: str,
        kind: str,
        record: ResultRecord | None,
        queue_ms: float | None,
        seconds: float,
    ) -> None:
        # "refused": a message that was no job (no id), so that nothing was stored.
        outcome, reason = (record.outcome, record.error_type) if record else ("refused", "")
        self.jobs.labels(model, version, kind, outcome, reason).inc()
        if queue_ms is not None:
            self.queue_wait.labels(model, version).observe(queue_ms / 1000.0)
        self.end_to_end.labels(model, version).observe(seconds)

    def set_models(self, models: list[dict[str, Any]]) -> None:
        self.model_info.clear()
        for m in models:
            provider = m["providers"][0] if m["providers"] else "none"
            self.model_info.labels(m["name"], str(m["version"]), m["kind"], provider).set(1)

    def set_backlog(
        self,
        model: str,
        version: int,
        depths: Mapping[int, int],
        oldest_age_s: float | None,
        dead_letters: int,
    ) -> None:
        for priority, depth in depths.items():
            self.queue_depth.labels(model, str(version), str(priority)).set(depth)
        self.oldest_age.labels(model, str(version)).set(oldest_age_s or 0.0)
        self.dead_letters.labels(model, str(version)).set(dead_letters)

    def set_gpus(self, readings: list[GpuReading]) -> None:
        for reading in readings:
            gpu = str(reading.index)
            self.gpu_utilization.labels(gpu).set(reading.utilization)
            self.gpu_memory_used.labels(gpu).set(reading.memory_used)
            self.gpu_memory_total.labels(gpu).set(reading.memory_total)
