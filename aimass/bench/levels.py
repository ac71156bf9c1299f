"""A level's figures: each producer's window combined, then the rounds' medians; and the
raw sweep's medians."""

from __future__ import annotations

import statistics
from typing import Any

from aimass.bench.broker import BrokerCost
from aimass.bench.stats import cdf, latency_summary, median_by_key, sum_counts


def summarize_raw(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per batch size over rounds; the best batch is the best median."""
    by_batch = median_by_key([r["images_per_s_by_batch"] for r in rounds])
    cpu_by_batch = median_by_key([r["cpu_ms_per_image_by_batch"] for r in rounds])
    best_batch = max(by_batch, key=lambda size: by_batch[size])
    return {
        "images_per_s_by_batch": by_batch,
        "cpu_ms_per_image_by_batch": cpu_by_batch,
        "best_batch_size": int(best_batch),
        "best_images_per_s": by_batch[best_batch],
        "best_cpu_ms_per_image": cpu_by_batch[best_batch],
        "batch1_images_per_s": by_batch.get("1"),
        "batch1_latency_ms": statistics.median(r["batch1_latency_ms"] for r in rounds),
        "providers": rounds[0]["providers"],
        "intra_op_threads": rounds[0]["intra_op_threads"],
        "rounds": rounds,
    }


def combine_windows(
    windows: list[dict[str, Any]],
    cpu_s: dict[str, float],
    span_s: float,
    worker_rss: int,
    gpu: dict[str, Any] | None = None,
    broker: BrokerCost | None = None,
) -> dict[str, Any]:
    """One level's figures from each producer's window, its CPU, the worker's memory,
    the GPUs' utilization and the broker's cost (``None`` where not measured)."""
    jobs_per_s = sum(w["completed"] / max(w["t1"] - w["t0"], 1e-9) for w in windows)
    images_per_s = sum(w["images"] / max(w["t1"] - w["t0"], 1e-9) for w in windows)
    latencies = sorted(x for w in windows for x in w["latencies_ms"])
    batches = sum_counts(w["batch_sizes"] for w in windows)
    jobs = sum(batches.values()) or 1
    completed = sum(w["completed"] for w in windows)
    return {
        "concurrency": windows[0]["concurrency"],
        "producers": len(windows),
        "jobs_in_flight": sum(w["concurrency"] for w in windows),
        "images_per_job": windows[0]["images_per_job"],
        "jobs_per_s": jobs_per_s,
        "images_per_s": images_per_s,
        "latency_ms": latency_summary(latencies),
        "latencies_ms": latencies,
        "worker_timing_ms": {
            "queue_p50": _p50([x for w in windows for x in w["worker_queue_ms"]]),
            "inference_p50": _p50([x for w in windows for x in w["inference_ms"]]),
        },
        "mean_batch_size": sum(int(size) * n for size, n in batches.items()) / jobs,
        "batch_sizes": batches,
        "bucket_sizes": sum_counts(w["bucket_sizes"] for w in windows),
        "completed": completed,
        "failed": sum(w["failed"] for w in windows),
        "unfinished": sum(w["unfinished"] for w in windows),
        "polled": sum(w["polled"] for w in windows),
        "errors": [e for w in windows for e in w["errors"]][:3],
        "window_s": span_s,
        "cpu_cores": {name: s / span_s for name, s in cpu_s.items()},
        "cpu_ms_per_job": {name: 1000.0 * s / max(completed, 1) for name, s in cpu_s.items()},
        "worker_rss_bytes": worker_rss,
        "gpu": gpu,
        "broker": broker.per_job(completed) if broker is not None else None,
    }


def _broker_medians(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The medians of the rounds' broker figures, by command too (most first)."""
    if not rounds:
        return None
    out = median_by_key([{k: v for k, v in r.items() if k != "by_command"} for r in rounds])
    names = dict.fromkeys(name for r in rounds for name in r["by_command"])
    # A command a round did not run cost that round nothing.
    by_command = median_by_key(
        [{name: r["by_command"].get(name, 0.0) for name in names} for r in rounds]
    )
    out["by_command"] = dict(sorted(by_command.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def _p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def aggregate_level(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of one level's rounds; batch sizes summed, latencies pooled."""
    scalars = ("jobs_per_s", "images_per_s", "mean_batch_size", "worker_rss_bytes")
    out: dict[str, Any] = {
        key: rounds[0][key]
        for key in ("concurrency", "producers", "jobs_in_flight", "images_per_job")
    }
    for key in scalars:
        out[key] = statistics.median(r[key] for r in rounds)
    out["latency_ms"] = median_by_key([r["latency_ms"] for r in rounds])
    out["worker_timing_ms"] = median_by_key([r["worker_timing_ms"] for r in rounds])
    out["cpu_cores"] = median_by_key([r["cpu_cores"] for r in rounds])
    out["cpu_ms_per_job"] = median_by_key([r["cpu_ms_per_job"] for r in rounds])
    out["batch_sizes"] = sum_counts(r["batch_sizes"] for r in rounds)
    out["bucket_sizes"] = sum_counts(r["bucket_sizes"] for r in rounds)
    sampled = [r["gpu"] for r in rounds if r["gpu"]]
    out["gpu"] = median_by_key(sampled) if sampled else None
    out["broker"] = _broker_medians([r["broker"] for r in rounds if r.get("broker")])
    pooled = sorted(x for r in rounds for x in r["latencies_ms"])
    out["latency_cdf_ms"] = cdf(pooled)
    for key in ("completed", "failed", "unfinished", "polled"):
        out[key] = sum(r[key] for r in rounds)
    out["errors"] = [e for r in rounds for e in r["errors"]][:3]
    out["rounds"] = [{k: v for k, v in r.items() if k != "latencies_ms"} for r in rounds]
    return out
