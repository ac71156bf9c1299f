"""The package boundaries: one import name, wings that import only what they may, and no
import cycle anywhere in ``aimass``.

The producer must stay installable without ONNX Runtime or TensorFlow, and the worker
without TensorFlow or scikit-learn; the contract (``aimass.protocol``) imports nothing else
of aimass, and the worker and the exporter never import the client. Each wing check
imports every module of a wing in a fresh interpreter and looks at what came along; the
cycle check reads every module's imports (those under ``TYPE_CHECKING`` and inside
functions included) without running them.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import aimass

WALK = """
import importlib, json, pkgutil, sys
package = importlib.import_module({wing!r})
names = [package.__name__]
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
    names.append(info.name)
print(json.dumps({{"modules": names, "loaded": sorted(sys.modules)}}))
"""

# What no wing may import: the other wings, and the whole-system layer above them.
ABOVE = {
    "aimass.bench",
    "aimass.cli",
    "aimass.demo",
    "aimass.local",
    "aimass.stack",
    "aimass.launcher",
    "aimass.embedded_redis",
}


def _import_all(wing: str) -> tuple[list[str], set[str]]:
    """Import every module of ``wing`` in a fresh interpreter: (its modules, every module
    then loaded)."""
    done = subprocess.run(
        [sys.executable, "-c", WALK.format(wing=wing)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    return report["modules"], set(report["loaded"])


@pytest.mark.parametrize(
    ("wing", "forbidden"),
    [
        (
            "aimass.protocol",
            {
                "onnxruntime",
                "tensorflow",
                "keras",
                "tf2onnx",
                "celery",
                "aimass.producer",
                "aimass.worker",
                "aimass.export",
                *ABOVE,
            },
        ),
        (
            "aimass.producer",
            {
                "onnxruntime",
                "tensorflow",
                "keras",
                "tf2onnx",
                "aimass.worker",
                "aimass.export",
                *ABOVE,
            },
        ),
        (
            "aimass.worker",
            {
                "tensorflow",
                "keras",
                "tf2onnx",
                "sklearn",
                "aimass.producer",
                "aimass.export",
                *ABOVE,
            },
        ),
    ],
)
def test_a_wing_imports_only_what_it_may(wing: str, forbidden: set[str]) -> None:
    modules, loaded = _import_all(wing)
    assert len(modules) > 5, f"{wing}: found only {modules}"
    packages = {name.split(".")[0] for name in loaded} | {
        ".".join(name.split(".")[:2]) for name in loaded
    }
    assert not packages & forbidden, (
        f"importing every module of {wing} loaded {sorted(packages & forbidden)}"
    )


def _modules() -> dict[str, Path]:
    """Every module of the installed ``aimass`` package, by dotted name."""
    root = Path(aimass.__file__).parent
    found: dict[str, Path] = {}
    for folder, _, files in os.walk(root, followlinks=True):
        for file in files:
            if file.endswith(".py"):
                parts = (Path(folder) / file).relative_to(root).with_suffix("").parts
                name = ".".join(["aimass", *parts]).removesuffix(".__init__")
                found[name] = Path(folder) / file
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The aimass modules that module ``name`` imports, wherever in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        yield from (target for target in targets if target in modules and target != name)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a list of modules, the first repeated last), if any."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_aimass() -> None:
    modules = _modules()
    graph = {name: set(_imports(name, path, modules)) for name, path in modules.items()}
    assert len(graph) > 80, sorted(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


@pytest.mark.parametrize(
    ("wing", "may_not"),
    [
        ("aimass.protocol", ("aimass.producer", "aimass.worker", "aimass.export", *ABOVE)),
        ("aimass.worker", ("aimass.producer", "aimass.export", *ABOVE)),
        ("aimass.export", ("aimass.producer", "aimass.worker", *ABOVE)),
    ],
)
def test_the_server_and_the_exporter_never_import_the_client(
    wing: str, may_not: tuple[str, ...]
) -> None:
    """Read, not run (the exporter imports TensorFlow): every import of every module."""
    modules = _modules()
    wrong = sorted(
        f"{name} imports {target}"
        for name, path in modules.items()
        if name == wing or name.startswith(wing + ".")
        for target in _imports(name, path, modules)
        if any(target == bad or target.startswith(bad + ".") for bad in may_not)
    )
    assert not wrong, wrong


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_only_aimass_is_importable_at_the_top(tmp_path: Path) -> None:
    """Run from an empty folder, so that the checkout itself is not on the path: what the
    install provides is ``aimass`` and none of the wings' folder names."""
    code = (
        "import importlib.util as u, json; print(json.dumps({n: u.find_spec(n) is not None "
        "for n in ('aimass', 'producer', 'worker', 'export')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == {
        "aimass": True,
        "producer": False,
        "worker": False,
        "export": False,
    }
