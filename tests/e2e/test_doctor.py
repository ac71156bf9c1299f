"""``aimass doctor`` run as a user runs it, on the CPU: every model loaded as a worker
would load it, with buckets on, and checked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aimass.protocol.manifest import ModelKind
from tests.support.processes import aimass_command, child_env
from tests.support.tiny_models import build_repository, classifier_model, publish

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny, tiny-gan, and tiny-wide (weights large enough to share)."""
    root = build_repository(tmp_path_factory.mktemp("doctor-models"))
    publish(root, "tiny-wide", 1, ModelKind.classify, classifier_model(hidden=True))
    return root


def doctor(zoo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*aimass_command(), "doctor", "--repository", str(zoo), *args],
        env=child_env("redis://127.0.0.1:1/0"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_doctor_on_the_cpu_checks_every_model_of_the_zoo(zoo: Path) -> None:
    run = doctor(zoo, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["ok"] and [d["device"] for d in report["devices"]] == ["cpu"]
    models = {m["name"]: m for m in report["devices"][0]["models"]}
    assert set(models) == {"tiny", "tiny-gan", "tiny-wide"}
    for model in models.values():
        assert model["providers"] == ["CPUExecutionProvider"]
        assert model["buckets"] == [1, 2, 4, 8, 16]  # buckets on, as on a GPU
        assert model["batch_limit"] == 16 and model["batch_limit_source"] == "manifest"
        assert sorted(map(int, model["settled_ms"])) == model["buckets"]
        assert all(ms > 0 for ms in model["settled_ms"].values())
        padded = model["padded_vs_exact"]
        assert (padded["size"], padded["bucket"]) == (3, 4)
        assert padded["max_abs_diff"] < 1e-5
        assert model["shape_change_ms"] >= 0
        assert set(model["memory_bytes"]) == {"shared", "own_copies", "measured"}
    wide = models["tiny-wide"]
    assert wide["weights_shared"] is True and wide["sharing_refused"] is None
    assert wide["shared_weight_bytes"] == 64 * 64 * 4  # the hidden layer's weights
    assert models["tiny"]["weights_shared"] is False  # nothing of 4 KiB or more


def test_doctor_table_names_each_check(zoo: Path) -> None:
    run = doctor(zoo, "--models", "tiny-wide")
    assert run.returncode == 0, run.stderr[-3000:]
    for words in (
        "tiny-wide v1 (classify) on CPUExecutionProvider",
        "batch limit 16 (manifest); buckets [1, 2, 4, 8, 16]",
        "shared by every bucket",
        "settled run time (ms) by batch size: 1:",
        "a shape change on a plain session",
        "3 inputs padded to 4",
    ):
        assert words in run.stdout, run.stdout


def test_doctor_fails_when_a_gpu_is_asked_for_and_cuda_does_not_start(zoo: Path) -> None:
    """GPU 7 is not there (on a machine without a GPU, no GPU is): the sessions run on
    the CPU, and the doctor says why CUDA did not start, and exits 1."""
    run = doctor(zoo, "--json", "--devices", "7", "--models", "tiny")
    assert run.returncode == 1, run.stderr[-3000:]
    report = json.loads(run.stdout)
    device = report["devices"][0]
    assert device["device"] == "gpu7" and not device["ok"] and not report["ok"]
    model = device["models"][0]
    assert model["providers"] == ["CPUExecutionProvider"] and model["cuda_missing"]
