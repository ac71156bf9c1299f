"""The package boundaries: one import name, and wings that import only what they may.

The producer must stay installable without ONNX Runtime or TensorFlow, and the worker
without TensorFlow or scikit-learn; each check imports every module of a wing in a fresh
interpreter and looks at what came along.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WALK = """
import importlib, json, pkgutil, sys
package = importlib.import_module({wing!r})
names = [package.__name__]
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
    names.append(info.name)
print(json.dumps({{"modules": names, "loaded": sorted(sys.modules)}}))
"""


def _import_all(wing: str) -> tuple[list[str], set[str]]:
    """Import every module of ``wing`` in a fresh interpreter: (its modules, every module
    then loaded)."""
    done = subprocess.run([sys.executable, "-c", WALK.format(wing=wing)],
                          capture_output=True, text=True, check=True, timeout=120)
    report = json.loads(done.stdout)
    return report["modules"], set(report["loaded"])


@pytest.mark.parametrize(
    ("wing", "forbidden"),
    [
        ("aimass.producer", {"onnxruntime", "tensorflow", "keras", "tf2onnx", "aimass.worker",
                             "aimass.export", "aimass.bench"}),
        ("aimass.worker", {"tensorflow", "keras", "tf2onnx", "sklearn", "aimass.export",
                           "aimass.bench"}),
    ],
)
def test_a_wing_imports_only_what_it_may(wing: str, forbidden: set[str]) -> None:
    modules, loaded = _import_all(wing)
    assert len(modules) > 5, f"{wing}: found only {modules}"
    packages = {name.split(".")[0] for name in loaded} | {
        ".".join(name.split(".")[:2]) for name in loaded}
    assert not packages & forbidden, (
        f"importing every module of {wing} loaded {sorted(packages & forbidden)}")


def test_only_aimass_is_importable_at_the_top(tmp_path: Path) -> None:
    """Run from an empty folder, so that the checkout itself is not on the path: what the
    install provides is ``aimass`` and none of the wings' folder names."""
    code = ("import importlib.util as u, json; print(json.dumps({n: u.find_spec(n) is not None "
            "for n in ('aimass', 'producer', 'worker', 'export')}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, check=True, timeout=60)
    assert json.loads(done.stdout) == {"aimass": True, "producer": False, "worker": False,
                                       "export": False}
