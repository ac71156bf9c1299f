"""``aimass bench`` end to end, as a user runs it, on the seeded digits stand-in."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import aimass_command, child_env

pytestmark = pytest.mark.integration

HEADLINE_KEYS = (
    "raw_best_images_per_s",
    "raw_batch1_latency_ms",
    "naive_jobs_per_s",
    "aimass_jobs_per_s",
    "aimass_images_per_s",
    "aimass_p50_latency_ms_c1",
    "aimass_multi_images_per_s",
    "ratio_vs_raw",
    "ratio_vs_naive",
    "worker_rss_bytes",
)


@pytest.mark.timeout(90)
def test_bench_measures_raw_naive_and_aimass_and_writes_json_and_plot(tmp_path: Path) -> None:
    results, plot = tmp_path / "out" / "bench.json", tmp_path / "out" / "bench.png"
    done = subprocess.run(
        [
            *aimass_command(),
            "bench",
            "--model",
            "digits",
            "--allow-synthetic",
            "--repository",
            str(tmp_path / "empty"),
            "--rounds",
            "1",
            "--concurrency",
            "1,4",
            "--duration",
            "0.6",
            "--warmup",
            "0.3",
            "--jobs",
            "300",
            "--images-per-job",
            "4",
            "--multi-concurrency",
            "2",
            "--raw-batch-sizes",
            "1,4,16",
            "--raw-seconds",
            "0.1",
            "--bulk",
            "150",
            "--json",
            str(results),
            "--plot",
            str(plot),
        ],
        env=child_env("redis://127.0.0.1:9/0"),
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    data = json.loads(results.read_text())
    digits = data["models"]["digits"]
    for key in HEADLINE_KEYS:
        assert isinstance(digits[key], int | float) and digits[key] > 0, (key, digits[key])
    assert digits["origin"] == "synthetic" and digits["model"]["origin"] == "synthetic"
    assert digits["raw_best_images_per_s"] >= digits["raw"]["batch1_images_per_s"]
    aimass_levels = digits["aimass"]["levels"]
    assert [(lv["concurrency"], lv["images_per_job"]) for lv in aimass_levels] == [
        (1, 1),
        (4, 1),
        (2, 4),
    ]
    for level in aimass_levels + digits["naive"]["levels"]:
        assert level["completed"] > 0 and level["failed"] == 0
        assert level["latency_ms"]["p50"] > 0 and sum(level["batch_sizes"].values()) > 0
        assert level["cpu_cores"]["worker"] > 0
    assert data["machine"]["usable_cores"] >= 1 and data["machine"]["provider"] == "cpu"
    assert {g["status"] for g in data["goals"]} <= {"PASS", "MISS", "SKIP"}
    assert data["goal_set"] == "cpu"
    assert "one image per job: aimass jobs/s >= 5 x naive jobs/s" in [
        g["goal"] for g in data["goals"]
    ]
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "goals:" in done.stdout and "digits" in done.stdout
    _check_cpu_worker_figures(data, done.stdout)
    _check_broker_figures(data, done.stdout)


def _check_broker_figures(data: dict[str, Any], stdout: str) -> None:
    """Every level says what its jobs cost Redis, for both systems, and so do the jobs
    sent in bulk (every one of them answered)."""
    digits = data["models"]["digits"]
    bulk = [digits["aimass"]["bulk"], digits["naive"]["bulk"]]
    for level in bulk:
        assert level["jobs_in_flight"] == level["completed"] == 150, level
        assert level["failed"] == level["unfinished"] == 0 and level["jobs_per_s"] > 0
    for level in digits["aimass"]["levels"] + digits["naive"]["levels"] + bulk:
        broker = level["broker"]
        assert broker["commands_per_job"] > 0 and broker["cpu_us_per_job"] > 0, broker
        assert sum(broker["by_command"].values()) == pytest.approx(
            broker["commands_per_job"], rel=0.05
        )
        assert "info" not in broker["by_command"]  # the meter's own commands are left out
    assert "publish" in digits["aimass"]["levels"][0]["broker"]["by_command"]
    for key in (
        "aimass_broker_cpu_us_per_job",
        "naive_broker_cpu_us_per_job",
        "aimass_broker_commands_per_job",
        "naive_broker_commands_per_job",
        "aimass_bulk_jobs_per_s",
        "naive_bulk_jobs_per_s",
        "aimass_bulk_broker_cpu_us_per_job",
        "naive_bulk_broker_commands_per_job",
    ):
        assert digits[key] > 0, key
    assert "broker (Redis, per job):" in stdout
    assert "  aimass   bulk     150" in stdout


def _check_cpu_worker_figures(data: dict[str, Any], stdout: str) -> None:
    """One process on the CPU, built for exact batch sizes (no buckets), no GPU figures."""
    digits = data["models"]["digits"]
    assert data["config"]["procs_per_gpu"] is None
    assert digits["aimass"]["worker_processes"] == 1 == digits["aimass_worker_processes"]
    (worker,) = digits["aimass"]["workers"]
    assert worker["device"] == "cpu" and worker["cpu_fallback"] is False
    assert [m["name"] for m in worker["models"]] == ["digits"]
    assert worker["models"][0]["buckets"] == [] and digits["aimass_buckets"] == []
    assert digits["aimass_devices"] == ["cpu"] and digits["aimass_cpu_fallback"] is False
    for level in digits["aimass"]["levels"] + digits["naive"]["levels"]:
        assert level["bucket_sizes"] == {} and level["gpu"] is None
        assert all(r["bucket_sizes"] == {} and r["gpu"] is None for r in level["rounds"])
    assert "aimass worker: 1 process on cpu; exact batch sizes" in stdout
    assert "GPU" not in stdout and "ran at" not in stdout


@pytest.mark.timeout(90)
def test_bench_counts_every_worker_process_and_the_buckets_its_jobs_ran_at(tmp_path: Path) -> None:
    """Two processes under the worker's supervisor, padding to buckets as on a GPU (the
    environment reaches the worker), so that what a GPU run reports is checked here."""
    results = tmp_path / "bench.json"
    done = subprocess.run(
        [
            *aimass_command(),
            "bench",
            "--model",
            "digits",
            "--allow-synthetic",
            "--repository",
            str(tmp_path / "empty"),
            "--skip",
            "raw,naive",
            "--rounds",
            "1",
            "--concurrency",
            "4",
            "--duration",
            "0.5",
            "--warmup",
            "0.3",
            "--jobs",
            "200",
            "--images-per-job",
            "4",
            "--multi-concurrency",
            "2",
            "--procs-per-gpu",
            "2",
            "--json",
            str(results),
            "--plot",
            str(tmp_path / "bench.png"),
        ],
        env=child_env("redis://127.0.0.1:9/0", AIMASS_BATCH_BUCKETS="1,4,64"),
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    data = json.loads(results.read_text())
    digits = data["models"]["digits"]
    assert data["config"]["procs_per_gpu"] == 2
    workers = digits["aimass"]["workers"]
    assert digits["aimass_worker_processes"] == 2 == len({w["pid"] for w in workers})
    assert digits["aimass_buckets"] == [1, 4, 64]
    assert "bulk" not in digits["aimass"]  # not asked for (--bulk 0, the default)
    assert all(w["models"][0]["buckets"] == [1, 4, 64] for w in workers)
    for level in digits["aimass"]["levels"]:
        buckets, batches = level["bucket_sizes"], level["batch_sizes"]
        assert set(buckets) <= {"1", "4", "64"} and buckets
        assert sum(buckets.values()) == sum(batches.values())  # every job names its bucket
        # Padding only grows a batch: no more jobs ran at a size up to 4 than had batches
        # of up to 4 jobs.
        small = sum(n for size, n in batches.items() if int(size) <= 4)
        assert buckets.get("1", 0) + buckets.get("4", 0) <= small
    assert "aimass worker: 2 processes on cpu; buckets 1,4,64" in done.stdout
    assert "c=2 x4: ran at " in done.stdout
