"""The producer commands run as a user runs them: the installed ``aimass`` script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aimass.producer.images import layout_for
from aimass.protocol.codecs import encode_image
from tests.support.processes import aimass_command, child_env
from tests.support.tiny_models import row_image

pytestmark = pytest.mark.e2e


def aimass(redis_url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*aimass_command(), *args],
        env=child_env(redis_url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def pngs(tmp_path: Path) -> list[Path]:
    paths = []
    for row in (5, 2):
        path = tmp_path / f"row{row}.png"
        path.write_bytes(encode_image(row_image(row)))
        paths.append(path)
    return paths


def test_classify_prints_each_images_label(shared_url: str, pngs: list[Path]) -> None:
    done = aimass(shared_url, "classify", *map(str, pngs), "--model", "tiny", "--top-k", "3")
    assert done.returncode == 0, done.stderr
    header, first, second = done.stdout.splitlines()
    assert header.split() == ["image", "label", "score", "next"]
    assert first.split()[:2] == [str(pngs[0]), "5"] and second.split()[:2] == [str(pngs[1]), "2"]
    as_json = aimass(shared_url, "classify", str(pngs[0]), "--model", "tiny", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["predictions"][0][0]["label"] == "5"


def test_generate_writes_a_png_grid_of_the_asked_label(shared_url: str, tmp_path: Path) -> None:
    done = aimass(
        shared_url,
        "generate",
        "--model",
        "tiny-gan",
        "--label",
        "7",
        "-n",
        "16",
        "--seed",
        "9",
        "-o",
        "grid.png",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote grid.png: 16 images" in done.stdout
    grid = Image.open(tmp_path / "grid.png")
    layout = layout_for(16, (8, 8))
    assert grid.format == "PNG" and grid.size == layout.size == (4 * 128 + 10,) * 2
    pixels = np.asarray(grid.convert("L"), dtype=np.float64)
    for index in range(16):  # each tile: the 8x8 image x16, its row 7 the bright one
        x, y = layout.origin(index)
        tile = pixels[y : y + 128, x : x + 128]
        assert int(tile.reshape(8, 16, 128).mean(axis=(1, 2)).argmax()) == 7
    raw = aimass(shared_url, "generate", "--model", "tiny-gan", "--label", "3", "-n", "2", "--json")
    assert raw.returncode == 0, raw.stderr
    result = json.loads(raw.stdout)
    assert result["labels"] == [3, 3] and len(result["images"]) == 2


def test_no_wait_then_status_then_result(shared_url: str, pngs: list[Path]) -> None:
    submitted = aimass(shared_url, "classify", str(pngs[1]), "--model", "tiny", "--no-wait")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    result = aimass(shared_url, "result", job_id, "--wait", "30", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predictions"][0][0]["label"] == "2"
    status = aimass(shared_url, "status", job_id)
    assert (status.returncode, status.stdout.strip()) == (0, "succeeded")
    unknown = aimass(shared_url, "status", "no-such-job", "--json")
    assert json.loads(unknown.stdout) == {"id": "no-such-job", "status": "unknown"}
    missing = aimass(shared_url, "result", "no-such-job")
    assert missing.returncode == 1 and "unknown job no-such-job" in missing.stderr


def test_exit_codes_say_failed_usage_and_not_finished(
    shared_url: str, redis_url: str, tmp_path: Path, pngs: list[Path]
) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"GIF89a not a png")
    failed = aimass(shared_url, "classify", str(junk), "--model", "tiny")
    assert failed.returncode == 1
    assert failed.stderr.startswith("InvalidInput: inputs[0]: image bytes are not PNG")
    usage = aimass(shared_url, "classify", str(pngs[0]), "--model", "tiny", "--top-k", "0")
    assert usage.returncode == 2 and usage.stderr.startswith("InvalidJob: ")
    no_worker = aimass(redis_url, "classify", str(pngs[0]), "--model", "tiny", "--timeout", "0.5")
    assert no_worker.returncode == 3
    assert "no live worker serves model 'tiny'" in no_worker.stderr
