"""The benchmark's pure pieces: the GPU goals, the bucket tally, the GPU sampler without
NVML, and what the report says about a GPU run."""

from __future__ import annotations

import sys
import time
import types
from typing import Any

import pytest

from aimass.bench.broker import BrokerCost
from aimass.bench.goals import GOALS, GPU_GOALS, evaluate_goals, goals_for
from aimass.bench.gpu import GpuSampler, visible_gpus
from aimass.bench.levels import aggregate_level, combine_windows
from aimass.bench.report import format_report, summarize
from aimass.bench.stats import sum_counts

pytestmark = pytest.mark.unit

GPU_HEADLINES: dict[str, dict[str, Any]] = {
    "alexnet": {
        "raw_best_images_per_s": 1000.0,
        "raw_batch1_latency_ms": 2.0,
        "aimass_multi_images_per_s": 850.0,
        "aimass_images_per_s": 250.0,
        "aimass_p50_latency_ms_c1": 4.5,
    },
    "digits": {
        "raw_best_images_per_s": 100_000.0,
        "raw_batch1_latency_ms": 0.1,
        "aimass_jobs_per_s": 12_000.0,
        "aimass_multi_images_per_s": 25_000.0,
        "aimass_p50_latency_ms_c1": 3.5,
    },
}


def _by_goal(goals: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(g["model"], g["goal"]): g for g in goals}


def test_gpu_goals_are_judged_against_their_own_targets() -> None:
    goals = _by_goal(evaluate_goals(GPU_HEADLINES, goals_for("cuda")))
    expected = {
        ("alexnet", "multi-image jobs: aimass images/s >= 0.8 x raw best batch"): ("PASS", 800.0),
        ("alexnet", "one image per job: aimass images/s >= 0.3 x raw best batch"): ("MISS", 300.0),
        ("digits", "one image per job: aimass jobs/s >= 10,000"): ("PASS", 10_000.0),
        ("digits", "multi-image jobs: aimass images/s >= 0.3 x raw best batch"): ("MISS", 30_000.0),
        ("digits", "concurrency 1: aimass p50 <= raw batch-1 latency + 3 ms"): ("MISS", 3.1),
        ("alexnet", "concurrency 1: aimass p50 <= raw batch-1 latency + 3 ms"): ("PASS", 5.0),
    }
    assert {key: g["status"] for key, g in goals.items()} == {
        key: status for key, (status, _) in expected.items()
    }
    assert {key: g["target"] for key, g in goals.items()} == pytest.approx(
        {key: target for key, (_, target) in expected.items()}
    )
    assert goals[("digits", "one image per job: aimass jobs/s >= 10,000")][
        "margin"
    ] == pytest.approx(0.2)


def test_a_cpu_run_keeps_the_cpu_goals() -> None:
    assert goals_for("cpu") is GOALS and goals_for("cuda") is GPU_GOALS
    goals = _by_goal(evaluate_goals(GPU_HEADLINES, goals_for("cpu")))
    # The CPU goals compare with the naive worker and the RSS, not measured here.
    assert (
        goals[("digits", "one image per job: aimass jobs/s >= 5 x naive jobs/s")]["status"]
        == "SKIP"
    )
    assert goals[("alexnet", "aimass images/s >= 0.8 x raw best batch")]["status"] == "MISS"
    assert len(goals) == 6


def test_a_gpu_goal_without_its_figure_is_skipped_not_failed() -> None:
    headlines = {"alexnet": {**GPU_HEADLINES["alexnet"], "aimass_multi_images_per_s": None}}
    goals = _by_goal(evaluate_goals(headlines, GPU_GOALS))
    assert (
        goals[("alexnet", "multi-image jobs: aimass images/s >= 0.8 x raw best batch")]["status"]
        == "SKIP"
    )
    assert goals[("digits", "one image per job: aimass jobs/s >= 10,000")]["status"] == "SKIP"


def test_bucket_tallies_add_up_in_size_order() -> None:
    total = sum_counts([{"16": 1, "8": 3}, {"2": 5, "16": 2}, {}])
    assert list(total.items()) == [("2", 5), ("8", 3), ("16", 3)]


def _window(batch_sizes: dict[str, int], bucket_sizes: dict[str, int]) -> dict[str, Any]:
    jobs = sum(batch_sizes.values())
    return {
        "concurrency": 8,
        "images_per_job": 1,
        "t0": 0.0,
        "t1": 1.0,
        "completed": jobs,
        "images": jobs,
        "failed": 0,
        "unfinished": 0,
        "polled": 0,
        "errors": [],
        "latencies_ms": [1.0] * jobs,
        "worker_queue_ms": [],
        "inference_ms": [],
        "batch_sizes": batch_sizes,
        "bucket_sizes": bucket_sizes,
    }


def _gpu(mean: float, top: float) -> dict[str, Any]:
    return {
        "gpus": 1,
        "samples": 10,
        "utilization_mean_percent": mean,
        "utilization_max_percent": top,
        "memory_used_mean_bytes": 2**30,
        "memory_used_max_bytes": 2**30,
    }


def test_a_level_counts_jobs_by_bucket_over_producers_and_rounds() -> None:
    cpu = {"worker": 1.0}
    first = combine_windows(
        [_window({"3": 3, "8": 8}, {"4": 3, "8": 8}), _window({"5": 5}, {"8": 5})],
        cpu,
        1.0,
        0,
        _gpu(40.0, 60.0),
    )
    assert first["bucket_sizes"] == {"4": 3, "8": 13}
    assert first["batch_sizes"] == {"3": 3, "5": 5, "8": 8}
    second = combine_windows([_window({"16": 16}, {"16": 16})], cpu, 1.0, 0, _gpu(80.0, 90.0))
    third = combine_windows([_window({"8": 8}, {"8": 8})], cpu, 1.0, 0, None)
    level = aggregate_level([first, second, third])
    assert level["bucket_sizes"] == {"4": 3, "8": 21, "16": 16}
    # The GPU figures are the median of the rounds that had any.
    assert level["gpu"]["utilization_mean_percent"] == pytest.approx(60.0)
    assert level["gpu"]["utilization_max_percent"] == pytest.approx(75.0)
    assert aggregate_level([third])["gpu"] is None


def test_a_levels_broker_cost_is_per_job_and_the_median_of_its_rounds() -> None:
    cpu = {"worker": 1.0}
    rounds = [
        combine_windows(
            [_window({"1": 100}, {})],
            cpu,
            1.0,
            0,
            None,
            BrokerCost({"set": 200, "publish": 100 + extra}, cpu_s, cpu_s / 4),
        )
        for extra, cpu_s in ((0, 0.004), (50, 0.002), (100, 0.003))
    ]
    first = rounds[0]["broker"]
    assert first["commands_per_job"] == pytest.approx(3.0)
    assert first["by_command"] == {"set": 2.0, "publish": 1.0}
    assert first["cpu_us_per_job"] == pytest.approx(40.0)
    assert first["cpu_sys_us_per_job"] == pytest.approx(10.0)
    assert first["jobs_per_s_per_core"] == pytest.approx(25_000.0)
    # A command one round did not run counts as nothing there, not as missing.
    rounds[2]["broker"]["by_command"]["hdel"] = 0.3
    level = aggregate_level(rounds)["broker"]
    assert level["cpu_us_per_job"] == pytest.approx(30.0)
    assert level["cpu_sys_us_per_job"] == pytest.approx(7.5)
    assert level["by_command"] == {"set": 2.0, "publish": 1.5, "hdel": 0.0}
    assert (
        aggregate_level([combine_windows([_window({"1": 1}, {})], cpu, 1.0, 0)])["broker"] is None
    )


def test_without_pynvml_the_gpu_sampler_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    sampler = GpuSampler(interval=0.01)
    sampler.sample()
    time.sleep(0.05)
    assert not sampler.available
    assert sampler.window(0.0, time.monotonic() + 1) is None
    sampler.stop()


class FakeNvml(types.ModuleType):
    """What the benchmark uses of ``pynvml``, for GPUs with settable readings."""

    class NVMLError(Exception):
        pass

    def __init__(self, rates: list[int], used: list[int], driver: bool = True) -> None:
        super().__init__("pynvml")
        self.rates, self.used, self.driver = rates, used, driver

    def nvmlInit(self) -> None:
        if not self.driver:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        if not self.driver:
            raise self.NVMLError("Uninitialized")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.rates)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(gpu=self.rates[handle], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(used=self.used[handle], total=141 * 2**30)


def test_without_a_driver_the_gpu_sampler_records_nothing_and_stops_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([50], [2**30], driver=False))
    sampler = GpuSampler(interval=0.01)
    sampler.sample()
    assert not sampler.available
    assert sampler.window(0.0, time.monotonic() + 1) is None
    sampler.stop()


def test_the_gpu_sampler_reports_mean_and_max_inside_a_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = FakeNvml([20, 40, 100], [2**30, 2 * 2**30, 8 * 2**30])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # GPU 2 is a neighbour's
    sampler = GpuSampler(interval=3600)  # sampled by hand below
    try:
        sampler.sample()
        t0 = time.monotonic()
        sampler.sample()
        nvml.rates[:2] = [60, 100]
        sampler.sample()
        t1 = time.monotonic()
        window = sampler.window(t0, t1)
    finally:
        sampler.stop()
    assert window is not None and window["gpus"] == 2 and window["samples"] == 2
    assert window["utilization_mean_percent"] == pytest.approx(55.0)
    assert window["utilization_max_percent"] == pytest.approx(80.0)
    assert window["memory_used_max_bytes"] == 3 * 2**30
    assert sampler.window(t1 + 1, t1 + 2) is None


def test_only_the_gpus_cuda_may_use_are_sampled() -> None:
    assert visible_gpus(4, None) == [0, 1, 2, 3]
    assert visible_gpus(4, "2, 0,2") == [2, 0]
    assert visible_gpus(2, "1,5") == [1]
    assert visible_gpus(2, "") == []
    assert visible_gpus(2, "GPU-8f1c") == [0, 1]


def _level(
    concurrency: int,
    per_job: int,
    images_per_s: float,
    p50: float,
    buckets: dict[str, int],
    gpu: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "images_per_job": per_job,
        "jobs_per_s": images_per_s / per_job,
        "images_per_s": images_per_s,
        "latency_ms": {"p50": p50, "p95": p50, "p99": p50},
        "mean_batch_size": 8.0,
        "cpu_cores": {"worker": 1.0, "redis": 0.1, "producers": 0.2, "others": 0.0},
        "cpu_ms_per_job": {"worker": 1.0},
        "bucket_sizes": buckets,
        "gpu": gpu,
        "rounds": [{"images_per_s": images_per_s, "jobs_per_s": images_per_s / per_job}],
    }


def _gpu_run() -> dict[str, Any]:
    heartbeat = {
        "pid": 0,
        "device": "gpu:0",
        "cpu_fallback": False,
        "models": [{"name": "alexnet", "buckets": [1, 2, 4, 8, 16]}],
    }
    alexnet = {
        "model": {
            "name": "alexnet",
            "origin": "synthetic",
            "model_file_bytes": 250e6,
            "max_batch_size": 16,
            "max_queue_delay_ms": 5.0,
        },
        "raw": {
            "best_images_per_s": 10_000.0,
            "best_batch_size": 64,
            "batch1_images_per_s": 1_000.0,
            "batch1_latency_ms": 1.0,
            "rounds": [],
        },
        "aimass": {
            "worker_rss_bytes": 2**30,
            "worker_processes": 4,
            "workers": [{**heartbeat, "pid": pid} for pid in range(4)],
            "levels": [
                _level(1, 1, 300.0, 3.5, {"1": 900}, None),
                _level(8, 16, 9_000.0, 14.0, {"8": 2, "16": 120}, _gpu(85.0, 97.0)),
            ],
        },
    }
    return {
        "machine": {"provider": "cuda", "cpu_model": "EPYC", "usable_cores": 16},
        "load_average_before": [1.0],
        "load_average_after": [1.0],
        "models": {"alexnet": alexnet},
    }


def test_a_gpu_run_is_summarized_with_its_processes_buckets_and_gpu_goals() -> None:
    results = summarize(_gpu_run())
    alexnet = results["models"]["alexnet"]
    assert alexnet["aimass_worker_processes"] == 4 and alexnet["aimass_devices"] == ["gpu:0"]
    assert alexnet["aimass_buckets"] == [1, 2, 4, 8, 16]
    assert alexnet["aimass_cpu_fallback"] is False
    assert results["goal_set"] == "gpu"
    statuses = {g["goal"]: g["status"] for g in results["goals"] if g["model"] == "alexnet"}
    assert statuses == {
        "multi-image jobs: aimass images/s >= 0.8 x raw best batch": "PASS",
        "one image per job: aimass images/s >= 0.3 x raw best batch": "MISS",
        "concurrency 1: aimass p50 <= raw batch-1 latency + 3 ms": "PASS",
    }
    text = format_report(results)
    assert "aimass worker: 4 processes on gpu:0; buckets 1,2,4,8,16" in text
    assert "    c=1 x1: ran at 1 x900\n" in text
    assert (
        "    c=8 x16: ran at 8 x2, 16 x120; GPU 85 % mean, 97 % max; "
        "memory 1.0 GiB mean, 1.0 GiB max"
    ) in text
    assert "goals (GPU, --provider cuda):" in text


def test_a_worker_that_fell_back_to_the_cpu_says_so() -> None:
    run = _gpu_run()
    for worker in run["models"]["alexnet"]["aimass"]["workers"][:1]:
        worker.update(device="cpu", cpu_fallback=True)
    results = summarize(run)
    assert results["models"]["alexnet"]["aimass_devices"] == ["cpu", "gpu:0"]
    assert (
        "4 processes on cpu, gpu:0 (CPU fallback: the CUDA provider did not start)"
        in format_report(results)
    )


def test_jobs_in_bulk_are_reported_apart_from_the_closed_loop_levels() -> None:
    run = _gpu_run()
    alexnet = run["models"]["alexnet"]
    closed_loop_best = summarize(_gpu_run())["models"]["alexnet"]["aimass_jobs_per_s"]
    bulk = {
        **_level(6000, 1, 50_000.0, 900.0, {}, None),
        "jobs_in_flight": 6000,
        "broker": {
            "commands_per_job": 3.4,
            "cpu_us_per_job": 40.0,
            "jobs_per_s_per_core": 25_000.0,
            "by_command": {"set": 2.0, "publish": 1.0},
        },
    }
    alexnet["aimass"]["bulk"] = bulk
    results = summarize(run)
    alexnet = results["models"]["alexnet"]
    assert alexnet["aimass_bulk_jobs_per_s"] == 50_000.0
    assert alexnet["aimass_bulk_broker_cpu_us_per_job"] == 40.0
    assert alexnet["aimass_bulk_broker_commands_per_job"] == 3.4
    assert alexnet["naive_bulk_jobs_per_s"] is None
    # Not a level: the best level, and the goals judged on it, are the closed loop's.
    assert alexnet["aimass_jobs_per_s"] == closed_loop_best
    text = format_report(results)
    assert "  aimass   bulk    6000    50,000    50,000    900.0" in text
    assert (
        "    aimass                  bulk    6000       3.4    40.0      25,000  set 2.00" in text
    )


def test_raw_at_the_workers_batch_limit_is_reported_beside_the_best_batch() -> None:
    from aimass.bench.report import raw_at_limit

    raw = {"images_per_s_by_batch": {"1": 100.0, "8": 500.0, "16": 600.0, "64": 900.0}}
    assert raw_at_limit(raw, 16, 450.0) == {
        "raw_at_limit_batch_size": 16,
        "raw_at_limit_images_per_s": 600.0,
        "ratio_vs_raw_at_limit": 0.75,
    }
    assert raw_at_limit(raw, 12, 250.0)["raw_at_limit_batch_size"] == 8  # measured below
    assert raw_at_limit(raw, None, 1.0)["ratio_vs_raw_at_limit"] is None


def test_sequence_bench_leaves_the_ramp_out_of_ttft_and_joins_rounds() -> None:
    from aimass.bench.sequence import BATCHED, RAW, Level, goals

    # The first two jobs of a level at 2 in flight came together to an idle worker.
    level = Level(BATCHED, 2, 6, 600, 2.0, [9.0, 9.0, 1.0, 2.0, 3.0, 4.0], ramp=2)
    summary = level.summary()
    assert summary["ttft_p50_ms"] == 2.5 and summary["ttft_p50_ms_with_ramp"] == 3.5
    assert summary["tokens_per_s"] == 300.0

    # Rounds of a level at 1: tokens and seconds add up, each round's ramp is left out.
    first = Level(RAW, 1, 2, 200, 1.0, [5.0, 1.0], ramp=1)
    both = first.joined(Level(RAW, 1, 2, 100, 1.0, [7.0, 3.0], ramp=1))
    assert (both.jobs, both.tokens, both.seconds) == (4, 300, 2.0)
    assert both.summary()["ttft_p50_ms"] == 2.0  # of 1.0 and 3.0

    at_1 = Level(BATCHED, 1, 2, 210, 1.0, [1.0, 1.0])
    checks = {g["goal"]: g for g in goals([both, at_1])}
    assert checks["tokens/s at 1: aimass / ONNX Runtime alone >= 0.7"]["value"] == 1.4
