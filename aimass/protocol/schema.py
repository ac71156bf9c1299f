"""JSON Schemas of the wire contract, generated from the models into ``docs/schemas``.

Regenerate with ``python -m aimass.protocol.schema docs/schemas``; a test fails when the
committed files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from aimass.protocol.contract import (
    CONTRACT_VERSION,
    ClassifyJob,
    ClassifyResult,
    ErrorResult,
    GenerateJob,
    GenerateResult,
    InferJob,
    InferResult,
)

SCHEMAS: dict[str, type[BaseModel]] = {
    "classify-job": ClassifyJob,
    "classify-result": ClassifyResult,
    "generate-job": GenerateJob,
    "generate-result": GenerateResult,
    "infer-job": InferJob,
    "infer-result": InferResult,
    "error-result": ErrorResult,
}


def schema_documents() -> dict[str, str]:
    """File name -> JSON text of each schema."""
    documents = {}
    for name, model in SCHEMAS.items():
        mode: Literal["validation", "serialization"] = (
            "validation" if name.endswith("-job") else "serialization"
        )
        schema: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"aimass/contract/v{CONTRACT_VERSION}/{name}.json",
            **model.model_json_schema(mode=mode),
        }
        documents[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return documents


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_documents().items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")
    for path in write_schemas(target):
        print(path)
