"""deploy/kubernetes/: every manifest valid against the Kubernetes and KEDA schemas,
offline (tests/deploy/conftest.py refuses any connection), and the kustomization that
applies them."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft7Validator

from tests.deploy.manifests import (
    ALL,
    ALTERNATIVES,
    APPLIED,
    KEDA_CRDS,
    KUBERNETES_VERSIONS,
    WORKER,
    Document,
    containers,
    find,
    kustomization,
    manifest_files,
    pod_specs,
)

# No server, no subprocess, no network.
pytestmark = pytest.mark.unit


def closed(schema: Any) -> Any:
    """An openAPIV3Schema that refuses unknown fields, as the API server's strict field
    validation (kubectl's default) does: a misspelt field fails here, not silently there."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items() if key != "properties"}
    if "properties" in schema:  # a map of field names to schemas, not a schema itself
        result["properties"] = {key: closed(value) for key, value in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            result["additionalProperties"] = False
    return result


def keda_validator(kind: str, api_version: str) -> Draft7Validator:
    text = KEDA_CRDS[kind].read_text(encoding="utf-8")
    (crd,) = [doc for doc in yaml.safe_load_all(text) if doc]
    assert crd["spec"]["names"]["kind"] == kind
    versions = {f"{crd['spec']['group']}/{v['name']}": v for v in crd["spec"]["versions"]}
    assert api_version in versions, f"{kind}: KEDA's CRD serves {sorted(versions)}"
    return Draft7Validator(closed(versions[api_version]["schema"]["openAPIV3Schema"]))


KEDA_DOCUMENTS = [(label, doc) for label, doc in ALL if doc["apiVersion"].startswith("keda.sh/")]
KUBERNETES_DOCUMENTS = [
    (label, doc) for label, doc in ALL if not doc["apiVersion"].startswith("keda.sh/")
]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("label", "document"), KUBERNETES_DOCUMENTS, ids=[label for label, _ in KUBERNETES_DOCUMENTS]
)
def test_manifest_follows_the_kubernetes_schema(
    label: str, document: Document, version: str
) -> None:
    # strict: unknown fields are errors. A kind without a schema raises, and fails too.
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(map(str, error.path)) or "<root>"
        pytest.fail(f"{label}, Kubernetes {version}: {path}: {error.message}")


@pytest.mark.parametrize(
    ("label", "document"), KEDA_DOCUMENTS, ids=[label for label, _ in KEDA_DOCUMENTS]
)
def test_keda_resource_follows_its_crd(label: str, document: Document) -> None:
    validator = keda_validator(document["kind"], document["apiVersion"])
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{label}: {'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors
    )


def test_the_keda_schemas_refuse_what_keda_does_not_know() -> None:
    scaled = find(APPLIED, "ScaledObject", WORKER)
    validator = keda_validator("ScaledObject", scaled["apiVersion"])
    misspelt = {**scaled, "spec": {**scaled["spec"], "minReplicas": 1}}
    assert not list(validator.iter_errors(scaled))
    assert list(validator.iter_errors(misspelt))


# ---------------------------------------------------------------- the files


def test_kustomization_applies_every_manifest_but_the_alternatives() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(manifest_files()) - ALTERNATIVES
    assert set(manifest_files()) >= ALTERNATIVES


def test_kustomization_names_every_aimass_image_it_runs() -> None:
    images = {c["image"].split(":")[0] for spec in pod_specs(APPLIED) for c in containers(spec)}
    aimass = {image for image in images if image.startswith("aimass-")}
    assert {entry["name"] for entry in kustomization()["images"]} == aimass
    assert aimass == {"aimass-worker", "aimass-export", "aimass-producer"}


# ---------------------------------------------------------------- references
