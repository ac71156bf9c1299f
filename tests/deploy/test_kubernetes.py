"""deploy/kubernetes/: the promises no schema checks: names that refer to each other, the
probes, the GPU, the queue names, Redis, the user the images run as."""

from __future__ import annotations

import ast
import base64
import importlib
import io
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from aimass.cli import build_parser
from aimass.protocol.keys import priority_queue_names
from tests.deploy.manifests import (
    ALTERNATIVE,
    APPLIED,
    ROOT,
    SCALED_MODEL,
    WORKER,
    Document,
    aimass_invocations,
    argv,
    compose,
    compose_default,
    container,
    containers,
    dockerfile_of_image,
    duration_s,
    env,
    find,
    image_user,
    of_kind,
    pod_spec,
    pod_specs,
    server_options,
    size_bytes,
)

# No server, no subprocess, no network.
pytestmark = pytest.mark.unit


def container_references(c: Document) -> Iterator[tuple[str, str, str | None]]:
    for item in c.get("env", []):
        source = item.get("valueFrom", {})
        for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if field in source:
                yield kind, source[field]["name"], source[field]["key"]
    for source in c.get("envFrom", []):
        for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if field in source:
                yield kind, source[field]["name"], None


def pod_references(spec: Document) -> Iterator[tuple[str, str, str | None]]:
    for c in containers(spec):
        yield from container_references(c)
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"], None
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"], None
        if "persistentVolumeClaim" in volume:
            yield "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], None


def references(document: Document) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every Secret, ConfigMap, PVC and TriggerAuthentication
    the document refers to."""
    spec = pod_spec(document)
    if spec is not None:
        yield from pod_references(spec)
    if document["kind"] == "TriggerAuthentication":
        for ref in document["spec"].get("secretTargetRef", []):
            yield "Secret", ref["name"], ref["key"]
    if document["kind"] == "ScaledObject":
        for trigger in document["spec"]["triggers"]:
            if "authenticationRef" in trigger:
                ref = trigger["authenticationRef"]
                yield ref.get("kind", "TriggerAuthentication"), ref["name"], None


def keys(document: Document) -> set[str]:
    return {
        *document.get("data", {}),
        *document.get("stringData", {}),
        *document.get("binaryData", {}),
    }


@pytest.mark.parametrize(
    "documents", [APPLIED, APPLIED + ALTERNATIVE], ids=["applied", "with the alternatives"]
)
def test_every_secret_configmap_claim_and_key_referred_to_is_defined(
    documents: list[Document],
) -> None:
    found = list(itertools.chain.from_iterable(map(references, documents)))
    assert {kind for kind, _, _ in found} >= {
        "Secret",
        "ConfigMap",
        "PersistentVolumeClaim",
        "TriggerAuthentication",
    }
    for kind, name, key in found:
        target = find(documents, kind, name)
        assert key is None or key in keys(target), f"{kind} {name} has no key {key!r}"


def test_every_volume_mount_names_a_volume_of_its_pod() -> None:
    for document in APPLIED + ALTERNATIVE:
        spec = pod_spec(document)
        if spec is None:
            continue
        volumes = {v["name"] for v in spec.get("volumes", [])}
        claims = document["spec"].get("volumeClaimTemplates", [])
        volumes |= {claim["metadata"]["name"] for claim in claims}
        for c in containers(spec):
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{c['name']}: no volume {mount['name']!r}"


def test_every_service_selects_pods_and_their_named_port() -> None:
    for service in of_kind(APPLIED, "Service"):
        selector = service["spec"]["selector"]
        pods = [
            spec
            for doc in APPLIED
            if (spec := pod_spec(doc))
            and selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert pods, f"Service {service['metadata']['name']} selects no pods"
        named = {
            port["name"]: port["containerPort"]
            for spec in pods
            for c in spec["containers"]
            for port in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert named.get(port["targetPort"]) == port["port"], (
                f"Service {service['metadata']['name']}: no container port "
                f"{port['targetPort']!r} = {port['port']}"
            )


# ---------------------------------------------------------------- the workers


@pytest.fixture(scope="module")
def worker() -> Document:
    return container(find(APPLIED, "Deployment", WORKER), "worker")


def http_probe(c: Document, probe: str) -> tuple[str, str]:
    action = c[probe]["httpGet"]
    return action["path"], action["port"]


def test_worker_probes_the_health_endpoints_on_its_metrics_port(worker: Document) -> None:
    assert http_probe(worker, "livenessProbe") == ("/livez", "metrics")
    assert http_probe(worker, "readinessProbe") == ("/readyz", "metrics")
    assert http_probe(worker, "startupProbe") == ("/livez", "metrics")
    ports = {port["name"]: port["containerPort"] for port in worker["ports"]}
    assert ports["metrics"] == int(env(worker)["AIMASS_METRICS_PORT"])


def test_worker_startup_probe_waits_for_the_models_to_load(worker: Document) -> None:
    startup = worker["startupProbe"]
    # Minutes on a GPU: CUDA, then a session per model and batch size, each warmed.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_worker_metrics_are_announced_for_prometheus(worker: Document) -> None:
    service = find(APPLIED, "Service", "aimass-worker-metrics")
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == env(worker)["AIMASS_METRICS_PORT"]


def test_worker_asks_for_one_gpu(worker: Document) -> None:
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert argv(worker)[:4] == ["aimass", "worker", "--devices", "auto"]


def test_worker_reads_redis_url_from_the_secret(worker: Document) -> None:
    assert env(worker)["REDIS_URL"] == {
        "secretKeyRef": {"name": "aimass-redis", "key": "REDIS_URL"}
    }


def test_worker_reads_the_models_claim_read_only(worker: Document) -> None:
    spec = pod_spec(find(APPLIED, "Deployment", WORKER))
    assert spec is not None
    (volume,) = spec["volumes"]
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    (mount,) = worker["volumeMounts"]
    assert mount == {"name": volume["name"], "mountPath": "/models", "readOnly": True}
    assert env(worker)["AIMASS_MODEL_REPOSITORY"] == mount["mountPath"]


def test_worker_finishes_its_batches_before_it_is_killed() -> None:
    spec = pod_spec(find(APPLIED, "Deployment", WORKER))
    assert spec is not None
    grace = duration_s(compose()["services"]["worker"]["stop_grace_period"])
    assert spec["terminationGracePeriodSeconds"] >= grace
    # Not PID 1, which has no default signal actions: compose's `init: true`.
    assert spec["shareProcessNamespace"] is True


def test_worker_waits_for_a_published_model_with_code_that_exists() -> None:
    wait = container(find(APPLIED, "Deployment", WORKER), "wait-for-models")
    assert argv(wait)[:2] == ["python", "-c"]
    script = ast.parse(argv(wait)[2])
    imports = [node for node in ast.walk(script) if isinstance(node, ast.ImportFrom)]
    assert imports
    for node in imports:
        module = importlib.import_module(node.module or "")
        for alias in node.names:
            assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


# ---------------------------------------------------------------- scaling


def scaled_objects() -> list[Document]:
    return of_kind(APPLIED + ALTERNATIVE, "ScaledObject")


def triggers(kind: str) -> list[Document]:
    return [t for so in scaled_objects() for t in so["spec"]["triggers"] if t["type"] == kind]


def test_one_scaled_object_is_applied_per_deployment() -> None:
    targets = [so["spec"]["scaleTargetRef"]["name"] for so in of_kind(APPLIED, "ScaledObject")]
    assert targets == [WORKER]


@pytest.mark.parametrize(
    "scaled", scaled_objects(), ids=[so["spec"]["triggers"][0]["type"] for so in scaled_objects()]
)
def test_scaled_object_scales_the_worker_deployment(scaled: Document) -> None:
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert target["name"] == find(APPLIED, "Deployment", WORKER)["metadata"]["name"]
    # Never zero: a new worker loads its models for minutes before its first job.
    assert 1 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]


def test_redis_triggers_watch_every_priority_list_of_the_model() -> None:
    names = [trigger["metadata"]["listName"] for trigger in triggers("redis")]
    assert names == priority_queue_names(SCALED_MODEL)


def test_redis_triggers_read_the_redis_and_database_of_redis_url() -> None:
    secret = find(APPLIED, "Secret", "aimass-redis")["stringData"]
    url = urlsplit(secret["REDIS_URL"])
    assert secret["REDIS_ADDRESS"] == f"{url.hostname}:{url.port}"
    database = url.path.strip("/") or "0"
    for trigger in triggers("redis"):
        assert trigger["metadata"].get("databaseIndex", "0") == database
        authentication = find(
            APPLIED, "TriggerAuthentication", trigger["authenticationRef"]["name"]
        )
        assert {"parameter": "address", "name": "aimass-redis", "key": "REDIS_ADDRESS"} in (
            authentication["spec"]["secretTargetRef"]
        )
    redis = find(APPLIED, "Service", url.hostname or "")
    assert url.port in [port["port"] for port in redis["spec"]["ports"]]


def test_prometheus_trigger_counts_each_queue_list_once() -> None:
    (trigger,) = triggers("prometheus")
    query = trigger["metadata"]["query"]
    # Every worker reports the same lists: max over workers, then the sum of the lists.
    assert re.fullmatch(
        rf'sum\(max by \(priority\) \(aimass_queue_depth\{{model="{SCALED_MODEL}"\}}\)\)', query
    )
    assert '"aimass_queue_depth"' in (ROOT / "worker" / "metrics.py").read_text(encoding="utf-8")


# ---------------------------------------------------------------- redis, export, producer


def test_redis_keeps_every_write_and_never_evicts() -> None:
    redis = container(find(APPLIED, "StatefulSet", "aimass-redis"), "redis")
    options = server_options(redis["args"])
    # What docker-compose.yml's redis promises, and a memory bound below the pod's limit.
    promised = server_options(compose()["services"]["redis"]["command"][1:])
    assert {name: compose_default(value) for name, value in promised.items()}.items() <= (
        options.items()
    )
    assert options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    limit = size_bytes(redis["resources"]["limits"]["memory"])
    assert 0 < size_bytes(options["--maxmemory"]) < limit


def test_export_job_runs_the_compose_export_into_the_models_claim() -> None:
    job = find(APPLIED, "Job", "aimass-export")
    export = container(job, "export")
    assert argv(export) == compose()["services"]["export"]["command"]
    (mount,) = export["volumeMounts"]
    assert "readOnly" not in mount and mount["mountPath"] == "/models"
    spec = pod_spec(job)
    assert spec is not None and spec["restartPolicy"] == "Never"


def test_producer_example_classifies_the_image_it_mounts() -> None:
    job = find(APPLIED, "Job", "aimass-classify-example")
    classify = container(job, "classify")
    assert argv(classify)[:2] == ["aimass", "classify"]
    assert argv(classify)[argv(classify).index("--model") + 1] == SCALED_MODEL
    (mount,) = classify["volumeMounts"]
    spec = pod_spec(job)
    assert spec is not None
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    images = find(APPLIED, "ConfigMap", volume["configMap"]["name"])["binaryData"]
    (path,) = [a for a in argv(classify) if a.startswith(mount["mountPath"] + "/")]
    png = base64.b64decode(images[Path(path).name], validate=True)
    with Image.open(io.BytesIO(png)) as image:
        assert (image.format, image.size) == ("PNG", (32, 32))


# ---------------------------------------------------------------- every pod


def test_aimass_containers_run_as_the_images_non_root_user() -> None:
    checked = 0
    for spec in pod_specs(APPLIED):
        for c in containers(spec):
            if not c["image"].startswith("aimass-"):
                continue
            context = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
            uid = image_user(dockerfile_of_image(c["image"])).split(":")[0]
            assert context.get("runAsUser") == int(uid) == 10001, c["name"]
            assert context.get("runAsNonRoot") is True, c["name"]
            assert context.get("allowPrivilegeEscalation") is False, c["name"]
            checked += 1
    assert checked >= 4


def test_no_service_link_variables_in_any_pod() -> None:
    # A Service named aimass-metrics would set AIMASS_METRICS_PORT=tcp://... in every pod.
    for spec in pod_specs(APPLIED + ALTERNATIVE):
        assert spec.get("enableServiceLinks") is False, [c["name"] for c in spec["containers"]]


INVOCATIONS = aimass_invocations()


def test_the_manifests_run_the_commands_they_promise() -> None:
    found = {tuple(arguments[:2]) for _, arguments in INVOCATIONS}
    assert {("worker", "--devices"), ("export", "zoo"), ("classify", "/work/seven.png")} <= found


@pytest.mark.parametrize(
    ("source", "arguments"),
    INVOCATIONS,
    ids=[f"{source}: aimass {' '.join(a)}" for source, a in INVOCATIONS],
)
def test_aimass_command_parses(
    source: str, arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        build_parser().parse_args(arguments)
    except SystemExit:
        pytest.fail(
            f"{source}: `aimass {' '.join(arguments)}` does not parse:\n{capsys.readouterr().err}"
        )
