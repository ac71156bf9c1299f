"""``aimass bench`` end to end, as a user runs it, on the seeded digits stand-in."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import aimass_command, child_env

pytestmark = pytest.mark.integration

HEADLINE_KEYS = (
    "raw_best_images_per_s", "raw_batch1_latency_ms", "naive_jobs_per_s",
    "aimass_jobs_per_s", "aimass_images_per_s", "aimass_p50_latency_ms_c1",
    "aimass_multi_images_per_s", "ratio_vs_raw", "ratio_vs_naive", "worker_rss_bytes",
)


@pytest.mark.timeout(90)
def test_bench_measures_raw_naive_and_aimass_and_writes_json_and_plot(tmp_path: Path) -> None:
    results, plot = tmp_path / "out" / "bench.json", tmp_path / "out" / "bench.png"
    done = subprocess.run(
        [*aimass_command(), "bench", "--model", "digits", "--allow-synthetic",
         "--repository", str(tmp_path / "empty"), "--rounds", "1", "--concurrency", "1,4",
         "--duration", "0.6", "--warmup", "0.3", "--jobs", "300",
         "--images-per-job", "4", "--multi-concurrency", "2",
         "--raw-batch-sizes", "1,4,16", "--raw-seconds", "0.1",
         "--json", str(results), "--plot", str(plot)],
        env=child_env("redis://127.0.0.1:9/0"), capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stderr[-4000:]

    data = json.loads(results.read_text())
    digits = data["models"]["digits"]
    for key in HEADLINE_KEYS:
        assert isinstance(digits[key], int | float) and digits[key] > 0, (key, digits[key])
    assert digits["origin"] == "synthetic" and digits["model"]["origin"] == "synthetic"
    assert digits["raw_best_images_per_s"] >= digits["raw"]["batch1_images_per_s"]
    aimass_levels = digits["aimass"]["levels"]
    assert [(lv["concurrency"], lv["images_per_job"]) for lv in aimass_levels] == [
        (1, 1), (4, 1), (2, 4)]
    for level in aimass_levels + digits["naive"]["levels"]:
        assert level["completed"] > 0 and level["failed"] == 0
        assert level["latency_ms"]["p50"] > 0 and sum(level["batch_sizes"].values()) > 0
        assert level["cpu_cores"]["worker"] > 0
    assert data["machine"]["usable_cores"] >= 1 and data["machine"]["provider"] == "cpu"
    assert {g["status"] for g in data["goals"]} <= {"PASS", "MISS", "SKIP"}
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "goals:" in done.stdout and "digits" in done.stdout
