"""deploy/kubernetes/ as the tests read it: the manifests, the files they refer to, and
what docker-compose.yml and the Dockerfiles promise them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
DATA = ROOT / "tests" / "data"
COMPOSE_FILE = ROOT / "docker-compose.yml"
# KEDA's CRDs, vendored: kind -> file.
KEDA_CRDS = {
    "ScaledObject": DATA / "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": DATA / "keda.sh_triggerauthentications.yaml",
}
# The oldest and the newest Kubernetes whose schemas the package bundles (1.25 and 1.37
# in kubernetes-validate 1.37.0).
KUBERNETES_VERSIONS = sorted(
    {kubernetes_validate.utils.all_versions()[0], kubernetes_validate.latest_version()}
)
# Kept beside the applied files but not listed in kustomization.yaml.
ALTERNATIVES = {"worker-scaledobject-prometheus.yaml"}
WORKER = "aimass-worker"
SCALED_MODEL = "digits"
WORKLOADS = {"Deployment", "StatefulSet", "Job"}

Document = dict[str, Any]


# ---------------------------------------------------------------- loading


def load(name: str) -> list[Document]:
    text = (MANIFESTS / name).read_text(encoding="utf-8")
    return [document for document in yaml.safe_load_all(text) if document]


def kustomization() -> Document:
    (document,) = load("kustomization.yaml")
    return document


def manifest_files() -> list[str]:
    return sorted(
        path.name for path in MANIFESTS.glob("*.yaml") if path.name != "kustomization.yaml"
    )


def labelled(files: list[str]) -> list[tuple[str, Document]]:
    """Each document of ``files`` with a label for messages: ``file: Kind/name``."""
    return [
        (f"{name}: {doc['kind']}/{doc['metadata']['name']}", doc)
        for name in files
        for doc in load(name)
    ]


ALL = labelled(manifest_files())
APPLIED = [doc for _, doc in labelled(kustomization()["resources"])]
ALTERNATIVE = [doc for _, doc in labelled(sorted(ALTERNATIVES))]


def find(documents: list[Document], kind: str, name: str) -> Document:
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name!r}, found {len(found)}"
    return found[0]


def of_kind(documents: list[Document], kind: str) -> list[Document]:
    return [d for d in documents if d["kind"] == kind]


def pod_spec(document: Document) -> Document | None:
    if document["kind"] not in WORKLOADS:
        return None
    return document["spec"]["template"]["spec"]


def pod_specs(documents: list[Document]) -> list[Document]:
    return [spec for spec in map(pod_spec, documents) if spec is not None]


def containers(spec: Document) -> list[Document]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(document: Document, name: str) -> Document:
    spec = pod_spec(document)
    assert spec is not None
    (found,) = [c for c in containers(spec) if c["name"] == name]
    return found


def env(c: Document) -> dict[str, Any]:
    """A container's environment: each variable's value, or where it comes from."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in c["env"]}


def argv(c: Document) -> list[str]:
    return [*c.get("command", []), *c.get("args", [])]


def aimass_invocations() -> list[tuple[str, list[str]]]:
    """The argument lists every container of the manifests gives to `aimass`."""
    return [
        (f"{source} {c['name']}", argv(c)[1:])
        for source, doc in ALL
        if (spec := pod_spec(doc))
        for c in containers(spec)
        if argv(c)[:1] == ["aimass"]
    ]


def compose() -> Document:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def dockerfile_of_image(image: str) -> Path:
    """The Dockerfile docker-compose.yml builds ``image`` (any tag) from."""
    name = image.split(":")[0]
    for service in compose()["services"].values():
        if service.get("image", "").split(":")[0] == name and "build" in service:
            return ROOT / service["build"].get("context", ".") / service["build"]["dockerfile"]
    raise AssertionError(f"docker-compose.yml builds no image named {name!r}")


def image_user(dockerfile: Path) -> str:
    """The USER of the Dockerfile's last stage: the user a plain build's image runs as."""
    user = None
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            user = None
        elif keyword.upper() == "USER":
            user = rest.strip()
    assert user, f"{dockerfile.name}: its last stage sets no USER"
    return user


def size_bytes(value: str) -> int:
    """A Redis (``2gb``) or Kubernetes (``3Gi``) memory size in bytes."""
    match = re.fullmatch(r"(\d+)([kmg]b|[KMG]i)?", value)
    assert match, f"not a memory size: {value!r}"
    unit = (match[2] or "").lower()[:1]
    return int(match[1]) * 1024 ** " kmg".index(unit or " ")


def server_options(arguments: list[str]) -> dict[str, str]:
    """``redis-server --name value ...`` arguments as a dict."""
    options = dict(zip(arguments[::2], arguments[1::2], strict=True))
    assert all(name.startswith("--") for name in options), arguments
    return options


def compose_default(value: str) -> str:
    """A Compose value with each ``${VARIABLE:-default}`` replaced by its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def duration_s(value: str) -> float:
    """A Compose duration such as ``2m`` or ``1m30s`` in seconds."""
    parts = re.findall(r"(\d+)(h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(int(number) * {"h": 3600, "m": 60, "s": 1}[unit] for number, unit in parts)


# ---------------------------------------------------------------- schemas, offline
