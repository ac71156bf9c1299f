"""Prometheus metrics of one worker process (names and labels in docs/metrics.md)."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from aimass.producer.records import ResultRecord

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10,
                    30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """The worker's metrics in a registry of their own; served when ``port`` is set."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter("aimass_jobs", "Jobs settled, by model, kind and outcome; "
                            "reason is the error type of a failed job",
                            ["model", "kind", "outcome", "reason"], registry=r)
        self.queue_wait = Histogram("aimass_queue_wait_seconds",
                                    "From a job's arrival at the worker to the start of its "
                                    "batch", ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("aimass_inference_seconds", "session.run time per batch",
                                   ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.end_to_end = Histogram("aimass_job_seconds",
                                    "From a job's arrival at the worker to its stored result",
                                    ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("aimass_batch_size", "Inputs per batch", ["model"],
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.bucket_runs = Counter("aimass_bucket_runs", "Batches run, by the size the model "
                                   "ran at (its bucket, padding included; the batch's own "
                                   "size where batches run exact sizes)",
                                   ["model", "bucket"], registry=r)
        self.cpu_fallback = Gauge("aimass_cpu_fallback", "1 when this process was asked to "
                                  "run on a GPU but runs on the CPU", registry=r)
        self.in_flight = Gauge("aimass_jobs_in_flight",
                               "Jobs taken from Redis and not yet settled", registry=r)
        self.model_info = Gauge("aimass_model_info", "Served model versions (value 1)",
                                ["model", "version", "kind", "provider"], registry=r)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)
            log.info("metrics on :%d/metrics", port)

    def on_batch(self, model: str, size: int, run_size: int, inference_ms: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.bucket_runs.labels(model, str(run_size)).inc()
        self.inference.labels(model).observe(inference_ms / 1000.0)

    def on_settled(self, model: str, kind: str, record: ResultRecord | None,
                   queue_ms: float | None, seconds: float) -> None:
        # "refused": a message that was no job (no id), so that nothing was stored.
        outcome, reason = (record.outcome, record.error_type) if record else ("refused", "")
        self.jobs.labels(model, kind, outcome, reason).inc()
        if queue_ms is not None:
            self.queue_wait.labels(model).observe(queue_ms / 1000.0)
        self.end_to_end.labels(model).observe(seconds)

    def set_models(self, models: list[dict[str, Any]]) -> None:
        self.model_info.clear()
        for m in models:
            provider = m["providers"][0] if m["providers"] else "none"
            self.model_info.labels(m["name"], str(m["version"]), m["kind"], provider).set(1)

