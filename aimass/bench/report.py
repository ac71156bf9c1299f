"""What a benchmark run says: headline figures, goals, a table and JSON (the plot:
aimass/bench/plot.py)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from aimass.bench.broker import format_by_command
from aimass.bench.goals import evaluate_goals, goal_set, goals_for

# Cores used by processes outside the benchmark above which the report warns.
NOISY_CORES = 0.25


def levels_of(system: dict[str, Any] | None, images_per_job: int = 1) -> list[dict[str, Any]]:
    """A system's closed-loop levels of ``images_per_job`` images a job (one by default)."""
    if not system:
        return []
    return [lv for lv in system["levels"] if lv["images_per_job"] == images_per_job]


def _best(levels: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return max(levels, key=lambda lv: lv[key]) if levels else None


def _at_concurrency(levels: list[dict[str, Any]], concurrency: int) -> dict[str, Any] | None:
    return next((lv for lv in levels if lv["concurrency"] == concurrency), None)


def _cpu_per_image(level: dict[str, Any] | None) -> float | None:
    """CPU milliseconds per image spent by the worker, Redis and the producers: steadier
    than throughput when neighbours share the cores."""
    if not level:
        return None
    per_job = sum(level["cpu_ms_per_job"].get(k) or 0.0 for k in ("worker", "redis", "producers"))
    return per_job / level["images_per_job"]


def _broker(level: dict[str, Any] | None, key: str) -> float | None:
    """One of a level's broker figures (``None`` where the broker was not metered)."""
    broker = (level or {}).get("broker")
    return broker.get(key) if broker else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def headline(model: dict[str, Any]) -> dict[str, Any]:
    """The figures a reader looks for first, from one model's measurements."""
    raw = model.get("raw") or {}
    naive, aimass = model.get("naive"), model.get("aimass")
    best_naive = _best(levels_of(naive), "jobs_per_s")
    best_aimass = _best(levels_of(aimass), "jobs_per_s")
    c1 = _at_concurrency(levels_of(aimass), 1)
    naive_c1 = _at_concurrency(levels_of(naive), 1)
    multi = next((lv for lv in (aimass or {}).get("levels", []) if lv["images_per_job"] > 1), None)
    out = {
        "origin": model["model"]["origin"],
        "model_file_bytes": model["model"]["model_file_bytes"],
        "raw_best_images_per_s": raw.get("best_images_per_s"),
        "raw_best_batch_size": raw.get("best_batch_size"),
        "raw_batch1_images_per_s": raw.get("batch1_images_per_s"),
        "raw_batch1_latency_ms": raw.get("batch1_latency_ms"),
        "naive_jobs_per_s": best_naive["jobs_per_s"] if best_naive else None,
        "naive_best_concurrency": best_naive["concurrency"] if best_naive else None,
        "naive_p50_latency_ms_c1": naive_c1["latency_ms"]["p50"] if naive_c1 else None,
        "naive_worker_rss_bytes": naive["worker_rss_bytes"] if naive else None,
        "aimass_jobs_per_s": best_aimass["jobs_per_s"] if best_aimass else None,
        "aimass_images_per_s": best_aimass["images_per_s"] if best_aimass else None,
        "aimass_best_concurrency": best_aimass["concurrency"] if best_aimass else None,
        "aimass_p50_latency_ms_c1": c1["latency_ms"]["p50"] if c1 else None,
        "aimass_multi_images_per_job": multi["images_per_job"] if multi else None,
        "aimass_multi_images_per_s": multi["images_per_s"] if multi else None,
        "worker_rss_bytes": aimass["worker_rss_bytes"] if aimass else None,
        "raw_best_cpu_ms_per_image": raw.get("best_cpu_ms_per_image"),
        "aimass_cpu_ms_per_image": _cpu_per_image(best_aimass),
        "naive_cpu_ms_per_image": _cpu_per_image(best_naive),
        "aimass_broker_cpu_us_per_job": _broker(best_aimass, "cpu_us_per_job"),
        "aimass_broker_commands_per_job": _broker(best_aimass, "commands_per_job"),
        "naive_broker_cpu_us_per_job": _broker(best_naive, "cpu_us_per_job"),
        "naive_broker_commands_per_job": _broker(best_naive, "commands_per_job"),
    }
    for system_name, system in (("naive", naive), ("aimass", aimass)):
        bulk = (system or {}).get("bulk")
        out[f"{system_name}_bulk_jobs_per_s"] = bulk["jobs_per_s"] if bulk else None
        out[f"{system_name}_bulk_broker_cpu_us_per_job"] = _broker(bulk, "cpu_us_per_job")
        out[f"{system_name}_bulk_broker_commands_per_job"] = _broker(bulk, "commands_per_job")
    out["ratio_vs_raw"] = _ratio(out["aimass_images_per_s"], out["raw_best_images_per_s"])
    out["ratio_vs_naive"] = _ratio(out["aimass_jobs_per_s"], out["naive_jobs_per_s"])
    out["ratio_multi_vs_raw"] = _ratio(
        out["aimass_multi_images_per_s"], out["raw_best_images_per_s"]
    )
    out["rss_vs_model_file"] = _ratio(out["worker_rss_bytes"], out["model_file_bytes"])
    out["cpu_per_image_vs_raw"] = _ratio(
        out["aimass_cpu_ms_per_image"], out["raw_best_cpu_ms_per_image"]
    )
    out.update(paired_ratios(model))
    out.update(worker_summary(model["model"]["name"], aimass))
    out.update(raw_at_limit(raw, out["aimass_batch_limit"], out["aimass_images_per_s"]))
    others = [
        lv["cpu_cores"]["others"]
        for system in (naive, aimass)
        for lv in (system or {}).get("levels", [])
        if lv["cpu_cores"].get("others")
    ]
    out["others_cpu_cores"] = statistics.fmean(others) if others else None
    return out


def raw_at_limit(
    raw: dict[str, Any], limit: int | None, aimass_images_per_s: float | None
) -> dict[str, Any]:
    """ONNX Runtime alone at the largest measured batch size within the worker's own batch
    limit: a ratio against it says how much the worker loses to the queue, one against
    the best batch also counts what its limit leaves on the table."""
    by_batch = raw.get("images_per_s_by_batch") or {}
    sizes = [int(size) for size in by_batch if limit and int(size) <= limit]
    if not sizes:
        return {
            "raw_at_limit_batch_size": None,
            "raw_at_limit_images_per_s": None,
            "ratio_vs_raw_at_limit": None,
        }
    size = max(sizes)
    rate = by_batch[str(size)]
    return {
        "raw_at_limit_batch_size": size,
        "raw_at_limit_images_per_s": rate,
        "ratio_vs_raw_at_limit": _ratio(aimass_images_per_s, rate),
    }


def worker_summary(name: str, aimass: dict[str, Any] | None) -> dict[str, Any]:
    """How the aimass worker served: its ready processes, their devices, whether any fell
    back to the CPU, and the batch sizes the model was built for (empty: exact sizes)."""
    workers = (aimass or {}).get("workers")
    if workers is None:
        return {
            "aimass_worker_processes": None,
            "aimass_devices": None,
            "aimass_cpu_fallback": None,
            "aimass_buckets": None,
            "aimass_batch_limit": None,
        }
    built = [m for w in workers for m in w.get("models") or [] if m.get("name") == name]
    limits = [int(m["max_batch_size"]) for m in built if m.get("max_batch_size")]
    return {
        "aimass_worker_processes": len(workers),
        "aimass_devices": sorted({str(w.get("device")) for w in workers}),
        "aimass_cpu_fallback": any(bool(w.get("cpu_fallback")) for w in workers),
        "aimass_buckets": sorted({int(b) for m in built for b in m.get("buckets") or []}),
        "aimass_batch_limit": max(limits) if limits else None,
    }


def paired_ratios(model: dict[str, Any]) -> dict[str, float | None]:
    """The ratios within each round (raw, naive and aimass measured minutes apart), and
    their medians: steadier than ratios of medians when neighbours load the machine."""
    raw_rounds = (model.get("raw") or {}).get("rounds", [])
    naive, aimass = levels_of(model.get("naive")), levels_of(model.get("aimass"))
    vs_raw, vs_naive = [], []
    for index in range(len(aimass[0]["rounds"]) if aimass else 0):
        best_images = max(lv["rounds"][index]["images_per_s"] for lv in aimass)
        best_jobs = max(lv["rounds"][index]["jobs_per_s"] for lv in aimass)
        if index < len(raw_rounds):
            vs_raw.append(best_images / max(raw_rounds[index]["images_per_s_by_batch"].values()))
        if naive and index < len(naive[0]["rounds"]):
            naive_jobs = max(lv["rounds"][index]["jobs_per_s"] for lv in naive)
            if naive_jobs:
                vs_naive.append(best_jobs / naive_jobs)
    return {
        "ratio_vs_raw_paired": statistics.median(vs_raw) if vs_raw else None,
        "ratio_vs_naive_paired": statistics.median(vs_naive) if vs_naive else None,
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Add each model's headline figures (flat, at the model's top level) and the goals."""
    headlines = {}
    for name, model in results["models"].items():
        headlines[name] = headline(model)
        model.update(headlines[name])
    provider = results["machine"]["provider"]
    results["goal_set"] = goal_set(provider)
    results["goals"] = evaluate_goals(headlines, goals_for(provider))
    return results


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _fmt_goal_value(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:,.0f} MiB"
    return f"{value:,.1f} {unit}"


def format_report(results: dict[str, Any]) -> str:
    """The table, the ratios and the goals, as printed at the end of a run."""
    lines = []
    machine = results["machine"]
    lines.append(
        f"machine: {machine['cpu_model']}, {machine['usable_cores']} cores, "
        f"provider {machine['provider']}; load average before/after "
        f"{results['load_average_before'][0]:.1f}/{results['load_average_after'][0]:.1f}"
    )
    for name, model in results["models"].items():
        lines.append("")
        lines.extend(_model_lines(name, model))
    noise = [m["others_cpu_cores"] for m in results["models"].values() if m["others_cpu_cores"]]
    if noise and max(noise) > NOISY_CORES:
        lines.append("")
        lines.append(
            f"note: other processes used {max(noise):.2f} cores on average during the "
            "windows (column 'other'): this machine was shared, figures are noisy"
        )
    lines.append("")
    lines.extend(_goal_lines(results))
    return "\n".join(lines)


TABLE_HEADER = (
    f"{'system':<8}{'conc':>5}{'img/job':>8}{'jobs/s':>10}{'img/s':>10}"
    f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'batch':>7}{'cpu w/r/p/other':>20}"
    f"{'cpu ms/job':>11}"
)


def _model_lines(name: str, model: dict[str, Any]) -> list[str]:
    m = model["model"]
    lines = [
        f"{name} ({m['origin']}, {m['model_file_bytes'] / 1e6:.1f} MB, "
        f"max batch {m['max_batch_size']}, delay {m['max_queue_delay_ms']} ms)"
    ]
    if model.get("raw"):
        lines.append(
            f"  raw onnxruntime: batch 1 {_fmt(model['raw_batch1_images_per_s'])} "
            f"img/s ({_fmt(model['raw_batch1_latency_ms'], 2)} ms); best "
            f"{_fmt(model['raw_best_images_per_s'])} img/s at batch "
            f"{model['raw_best_batch_size']} "
            f"({_fmt(model['raw_best_cpu_ms_per_image'], 2)} CPU ms/image)"
        )
        if model.get("raw_at_limit_batch_size"):
            lines.append(
                f"  raw at the worker's batch limit ({model['aimass_batch_limit']}; "
                f"measured at {model['raw_at_limit_batch_size']}): "
                f"{_fmt(model['raw_at_limit_images_per_s'])} img/s; aimass vs it: "
                f"{_fmt(model['ratio_vs_raw_at_limit'], 2)}x"
            )
    lines.append("  " + TABLE_HEADER)
    for system in ("naive", "aimass"):
        lines.extend(_table_row(system, lv) for lv in (model.get(system) or {}).get("levels", []))
    bulk = [system for system in ("naive", "aimass") if (model.get(system) or {}).get("bulk")]
    lines.extend(_table_row(system, model[system]["bulk"], bulk=True) for system in bulk)
    if bulk:
        lines.append(
            "  bulk: the jobs in the img/job column, one image each, sent at once and waited "
            "for; jobs/s is the rate the backlog drained at"
        )
    lines.extend(_worker_lines(model))
    lines.extend(_broker_lines(model))
    lines.append(
        f"  aimass vs raw best batch: {_fmt(model['ratio_vs_raw'], 2)}x images/s "
        f"(paired by round {_fmt(model['ratio_vs_raw_paired'], 2)}x); aimass vs naive: "
        f"{_fmt(model['ratio_vs_naive'], 1)}x jobs/s "
        f"(paired {_fmt(model['ratio_vs_naive_paired'], 1)}x)"
        + (
            f"; multi-image ({model['aimass_multi_images_per_job']}/job) vs raw: "
            f"{_fmt(model['ratio_multi_vs_raw'], 2)}x"
            if model["ratio_multi_vs_raw"]
            else ""
        )
        + (
            f"; CPU per image {_fmt(model['cpu_per_image_vs_raw'], 1)}x raw's"
            if model["cpu_per_image_vs_raw"]
            else ""
        )
        + (
            f"; worker RSS {model['worker_rss_bytes'] / 2**20:,.0f} MiB "
            f"({_fmt(model['rss_vs_model_file'], 2)}x the model file)"
            if model["worker_rss_bytes"]
            else ""
        )
    )
    return lines


def _table_row(system: str, lv: dict[str, Any], bulk: bool = False) -> str:
    """A level's row; ``bulk``: jobs sent at once (its conc column says "bulk" and its
    img/job column the jobs sent)."""
    cpu = lv["cpu_cores"]
    lat = lv["latency_ms"]
    cpu_text = f"{cpu['worker']:.2f}/{cpu['redis']:.2f}/{cpu['producers']:.2f}/{cpu['others']:.2f}"
    per_job = sum(
        v for k, v in lv["cpu_ms_per_job"].items() if k in ("worker", "redis", "producers")
    )
    return (
        f"  {system:<8}{_level_columns(lv, bulk, 5)}"
        f"{_fmt(lv['jobs_per_s']):>10}{_fmt(lv['images_per_s']):>10}"
        f"{_fmt(lat['p50'], 1):>9}{_fmt(lat['p95'], 1):>9}{_fmt(lat['p99'], 1):>9}"
        f"{lv['mean_batch_size']:>7.1f}{cpu_text:>20}{per_job:>11.2f}"
    )


def _level_columns(lv: dict[str, Any], bulk: bool, width: int) -> str:
    """A level's conc and img/job columns; in bulk, "bulk" and the jobs sent at once."""
    if bulk:
        return f"{'bulk':>{width}}{lv['jobs_in_flight']:>8}"
    return f"{lv['concurrency']:>{width}}{lv['images_per_job']:>8}"


def _broker_lines(model: dict[str, Any]) -> list[str]:
    """Per level, what its jobs cost Redis: commands and CPU per job, and the jobs/s one
    Redis core could carry at that cost."""
    rows = [
        (system, lv, False)
        for system in ("naive", "aimass")
        for lv in (model.get(system) or {}).get("levels", [])
        if lv.get("broker")
    ]
    rows += [
        (system, model[system]["bulk"], True)
        for system in ("naive", "aimass")
        if ((model.get(system) or {}).get("bulk") or {}).get("broker")
    ]
    if not rows:
        return []
    lines = [
        "  broker (Redis, per job):"
        f"{'conc':>6}{'img/job':>8}{'commands':>10}{'cpu us':>8}{'jobs/s/core':>12}"
        "  by command"
    ]
    for system, lv, bulk in rows:
        broker = lv["broker"]
        lines.append(
            f"    {system:<22}{_level_columns(lv, bulk, 6)}"
            f"{broker['commands_per_job']:>10.1f}{_fmt(broker['cpu_us_per_job'], 1):>8}"
            f"{_fmt(broker['jobs_per_s_per_core']):>12}"
            f"  {format_by_command(broker['by_command'], 6)}"
        )
    return lines


def _worker_lines(model: dict[str, Any]) -> list[str]:
    """The aimass worker's processes and buckets, then per level the buckets its jobs ran
    at and the GPU's load, where there were any."""
    processes = model.get("aimass_worker_processes")
    if processes is None:
        return []
    buckets = model["aimass_buckets"]
    lines = [
        f"  aimass worker: {processes} process{'es' if processes != 1 else ''} on "
        f"{', '.join(model['aimass_devices']) or '-'}"
        + (
            " (CPU fallback: the CUDA provider did not start)"
            if model["aimass_cpu_fallback"]
            else ""
        )
        + (f"; buckets {','.join(map(str, buckets))}" if buckets else "; exact batch sizes")
    ]
    for lv in model["aimass"]["levels"]:
        parts = []
        if lv.get("bucket_sizes"):
            parts.append(
                "ran at "
                + ", ".join(f"{size} x{count:,}" for size, count in lv["bucket_sizes"].items())
            )
        if lv.get("gpu"):
            parts.append(_gpu_text(lv["gpu"]))
        if parts:
            lines.append(f"    c={lv['concurrency']} x{lv['images_per_job']}: " + "; ".join(parts))
    return lines


def _gpu_text(gpu: dict[str, Any]) -> str:
    return (
        f"GPU {gpu['utilization_mean_percent']:.0f} % mean, "
        f"{gpu['utilization_max_percent']:.0f} % max; memory "
        f"{gpu['memory_used_mean_bytes'] / 2**30:,.1f} GiB mean, "
        f"{gpu['memory_used_max_bytes'] / 2**30:,.1f} GiB max"
    )


def _goal_lines(results: dict[str, Any]) -> list[str]:
    gpu = results.get("goal_set") == "gpu"
    lines = ["goals (GPU, --provider cuda):" if gpu else "goals:"]
    for goal in results["goals"]:
        if goal["status"] == "SKIP":
            lines.append(f"  SKIP {goal['model']}: {goal['goal']} (not measured)")
            continue
        lines.append(
            f"  {goal['status']} {goal['model']}: {goal['goal']}: "
            f"{_fmt_goal_value(goal['value'], goal['unit'])} vs "
            f"{_fmt_goal_value(goal['target'], goal['unit'])} "
            f"(margin {goal['margin'] * 100:+.1f} %)"
        )
    return lines


def write_json(results: dict[str, Any], path: Path) -> None:
    """The results, without the raw latency lists (their percentiles and CDF stay)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "latencies_ms"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, float) and math.isnan(value):
            return None
        return value

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(strip(results), indent=2) + "\n")
