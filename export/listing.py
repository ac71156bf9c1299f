"""``aimass models``: the published models, their quality and, for sequence models, a
sample each wrote at export.

Imported to build ``aimass --help``: at module level only the standard library and the
contract.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aimass.protocol.manifest import MODEL_FILE


def add_repository(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repository",
        metavar="DIR",
        help="model repository (default: $AIMASS_MODEL_REPOSITORY, else ./models)",
    )


def add_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = subparsers.add_parser("models", help="list the published models and their quality")
    add_repository(models)
    models.add_argument(
        "--json", action="store_true", help="print JSON: a list with one object per model version"
    )
    models.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    from aimass.protocol.manifest import resolve_repository

    repository = resolve_repository(args.repository)
    rows = _model_rows(repository)
    if args.json:
        print(json.dumps([model_metadata(row) for row in rows], indent=2))
    elif not rows:
        print(f"no models in {repository}", file=sys.stderr)
    else:
        print(_table(rows))
        for sample in filter(None, map(_sample, rows)):
            print(f"\n{sample}")
    return 0


def _sample(row: dict[str, Any]) -> str | None:
    """A sequence model's export sample, prompt included, indented under a heading."""
    sequence = row.get("sequence") or {}
    if not sequence.get("sample"):
        return None
    prompt = sequence.get("sample_prompt", "")
    text = (prompt + sequence["sample"]).expandtabs(4).splitlines()
    heading = f"{row['name']} {row['version']} wrote, from {prompt!r} (at export):"
    return "\n".join([heading, *(f"    {line}".rstrip() for line in text)])


def _model_rows(repository: Path) -> list[dict[str, Any]]:
    """One object per model version: its manifest, where it is and how big (or why the
    manifest is unreadable)."""
    from pydantic import ValidationError

    from aimass.protocol.manifest import (
        Manifest,
        published_models,
        published_versions,
        version_folder,
    )

    rows: list[dict[str, Any]] = []
    for name in published_models(repository):
        for version in published_versions(repository, name):
            folder = version_folder(repository, name, version)
            model_file = folder / MODEL_FILE
            row: dict[str, Any] = {"name": name, "version": version, "path": str(folder)}
            row["size_bytes"] = model_file.stat().st_size if model_file.is_file() else None
            try:
                row = Manifest.read(folder).model_dump(mode="json") | row
            except (OSError, ValidationError, ValueError) as error:
                row["error"] = f"unreadable manifest: {error}".splitlines()[0]
            rows.append(row)
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("NAME", "VERSION", "KIND", "INPUTS", "OUTPUTS", "SIZE", "QUALITY", "PARITY")
    lines = [header] + [
        (
            row["name"],
            str(row["version"]),
            row.get("kind", "?"),
            _tensors(row.get("inputs", [])),
            _tensors(row.get("outputs", [])),
            _size(row["size_bytes"]),
            quality_text(row.get("quality", {}), row.get("trained", True))
            if "error" not in row
            else row["error"],
            number(row.get("parity_max_abs_error")),
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _tensors(specs: list[dict[str, Any]]) -> str:
    from aimass.protocol.tensors import DATATYPES, describe_shape

    return ", ".join(
        f"{spec['name']} {DATATYPES.get(spec['dtype'], spec['dtype'])}"
        f"{describe_shape(spec['shape'])}"
        for spec in specs
    )


def model_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """A model version as the Open Inference Protocol's model metadata describes one
    (``name``, ``versions``, ``platform``, ``inputs``/``outputs`` of ``name``,
    ``datatype``, ``shape``), with aimass's own fields beside it."""
    from aimass.protocol.tensors import DATATYPES

    def tensors(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "name": spec["name"],
                "datatype": DATATYPES.get(spec["dtype"], spec["dtype"]),
                "shape": spec["shape"],
            }
            for spec in specs
        ]

    return {
        "name": row["name"],
        "versions": [str(row["version"])],
        "platform": "onnxruntime_onnx",
        "inputs": tensors(row.get("inputs", [])),
        "outputs": tensors(row.get("outputs", [])),
        **{key: value for key, value in row.items() if key not in ("inputs", "outputs", "name")},
    }


# The quality figures a table shows, where a manifest has them: a classifier's accuracy
# (and an embedding's retrieval accuracy), a generator's class agreement, a regression's
# R² and mean absolute error, a sequence model's held-out loss (nats per token) and
# perplexity.
QUALITY_FIGURES = (
    "test_accuracy",
    "retrieval_accuracy",
    "class_agreement",
    "r2",
    "mae",
    "held_out_loss",
    "perplexity",
)


def quality_text(quality: dict[str, Any], trained: bool = True) -> str:
    if not trained:
        return "untrained"
    shown = [f"{key}={number(quality[key])}" for key in QUALITY_FIGURES if key in quality]
    return " ".join(shown) or "-"


def number(value: Any) -> str:
    if value is None:
        return "-"
    if 1e-2 <= abs(value) <= 1:
        return f"{value:.4f}"
    return f"{value:.4g}" if abs(value) > 1 else f"{value:.2g}"


def _size(size: int | None) -> str:
    if size is None:
        return "missing"
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
