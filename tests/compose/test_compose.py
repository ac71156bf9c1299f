"""docker-compose.yml and docker/: valid Compose, the promises the deployment makes,
and every `aimass` command they name is one the CLI has."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

# Structural checks are unit tests; the ones that start the CLI are also marked e2e.
pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
DOCKER_DIR = ROOT / "docker"
WORKER_SERVICES = ("worker", "worker-cpu")
SHELL_OPERATORS = {"|", "||", "&&", ";"}


def load_compose() -> dict[str, Any]:
    # safe_load resolves the file's YAML anchors and merge keys (<<) as Compose does.
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


# ---------------------------------------------------------------- helpers


def argv(value: str | list[str] | None) -> list[str]:
    """A Compose command/entrypoint as a list of arguments."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def healthcheck_argv(test: str | list[str]) -> list[str]:
    """The command a healthcheck runs, without its CMD / CMD-SHELL marker."""
    if isinstance(test, str):
        return shlex.split(test)
    kind, *rest = test
    if kind == "CMD-SHELL":
        return shlex.split(" ".join(rest))
    assert kind == "CMD", f"healthcheck test {test!r} should start with CMD or CMD-SHELL"
    return list(rest)


def duration_s(value: str) -> float:
    """A Compose duration such as ``1m30s`` in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def logical_lines(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending.strip())
    return lines


def final_stage(dockerfile: Path) -> list[str]:
    """The instructions of the Dockerfile's last stage (the image a plain build makes)."""
    lines = logical_lines(dockerfile)
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert starts, f"{dockerfile} has no FROM"
    return lines[starts[-1] :]


def instruction(stage: list[str], name: str) -> str | None:
    """The arguments of the stage's last ``name`` instruction (the one that wins)."""
    found = None
    for line in stage:
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == name:
            found = rest.strip()
    return found


def exec_form(arguments: str | None) -> list[str]:
    if arguments is None:
        return []
    assert arguments.startswith("["), f"use the exec (JSON) form, not {arguments!r}"
    return json.loads(arguments)


def dockerfile_commands(dockerfile: Path) -> Iterator[tuple[str, list[str]]]:
    stage = final_stage(dockerfile)
    yield "CMD", exec_form(instruction(stage, "ENTRYPOINT")) + exec_form(instruction(stage, "CMD"))
    healthcheck = instruction(stage, "HEALTHCHECK")
    if healthcheck and healthcheck.upper() != "NONE":
        yield "HEALTHCHECK", exec_form(healthcheck[healthcheck.index(" CMD ") + 5 :].strip())


def compose_commands(services: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    for name, service in services.items():
        yield name, argv(service.get("entrypoint")) + argv(service.get("command"))
        test = service.get("healthcheck", {}).get("test")
        if test:
            yield f"{name} healthcheck", healthcheck_argv(test)


def referenced_dockerfiles(services: dict[str, Any]) -> dict[str, Path]:
    return {
        name: ROOT / service["build"].get("context", ".") / service["build"]["dockerfile"]
        for name, service in services.items()
        if isinstance(service.get("build"), dict)
    }


def aimass_invocations(command: list[str]) -> Iterator[list[str]]:
    """The argument lists given to `aimass` within ``command``."""
    for index, token in enumerate(command):
        if Path(token).name != "aimass":
            continue
        arguments: list[str] = []
        for following in command[index + 1 :]:
            if following in SHELL_OPERATORS:
                break
            arguments.append(following)
        yield arguments


def all_aimass_invocations() -> list[tuple[str, list[str]]]:
    """Every distinct `aimass ...` that the compose file and its Dockerfiles run."""
    services = load_compose()["services"]
    sources = list(compose_commands(services))
    for path in sorted(set(referenced_dockerfiles(services).values())):
        if path.is_file():
            sources += [(f"{path.name} {kind}", cmd) for kind, cmd in dockerfile_commands(path)]
    found: dict[tuple[str, ...], str] = {}
    for source, command in sources:
        for arguments in aimass_invocations(command):
            found.setdefault(tuple(arguments), source)
    return [(source, list(arguments)) for arguments, source in found.items()]


def load_requirements_helper() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pyproject_requirements", DOCKER_DIR / "pyproject_requirements.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    """``python args...`` from the repository root, as the installed package would run."""
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90
    )


# ---------------------------------------------------------------- the file itself


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    errors = sorted(Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{'.'.join(map(str, error.path)) or '<root>'}: {error.message}" for error in errors
    )


def test_compose_file_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def test_every_named_volume_is_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            is_named = not source.startswith(("/", ".", "~", "$"))
            assert not is_named or source in declared, f"{name}: volume {source!r} is not declared"


# ---------------------------------------------------------------- redis


def test_redis_fsyncs_every_write_to_its_append_only_file(services: dict[str, Any]) -> None:
    command = argv(services["redis"]["command"])
    pairs = dict(itertools.pairwise(command))
    assert pairs.get("--appendonly") == "yes"
    assert pairs.get("--appendfsync") == "always"
    assert pairs.get("--maxmemory-policy") == "noeviction"
    # Bounded: it cannot grow until the host runs out of memory.
    assert pairs.get("--maxmemory") == "${AIMASS_REDIS_MAXMEMORY:-2gb}"


def test_the_ha_profile_adds_a_replica_and_a_quorum_of_sentinels(services: dict[str, Any]) -> None:
    replica = services["redis-replica"]
    assert replica["profiles"] == ["ha"]
    pairs = dict(itertools.pairwise(argv(replica["command"])))
    assert pairs["--replicaof"] == "redis" and pairs["--appendfsync"] == "always"
    sentinels = [name for name in services if name.startswith("sentinel-")]
    assert len(sentinels) == 3
    for name in sentinels:
        assert services[name]["profiles"] == ["ha"]
        script = " ".join(argv(services[name]["command"]))
        assert "sentinel monitor aimass redis 6379 2" in script and "--sentinel" in script
    # Producers and workers name the sentinels when the profile is used.
    url = services["worker"]["environment"]["REDIS_URL"]
    assert url == "${AIMASS_REDIS_URL:-redis://redis:6379/0}"


def test_the_cluster_profile_makes_three_primaries_with_a_replica_each(
    services: dict[str, Any],
) -> None:
    nodes = [name for name in services if name.startswith("redis-cluster-") and name[-1].isdigit()]
    assert len(nodes) == 6
    for name in nodes:
        assert services[name]["profiles"] == ["cluster"]
        pairs = dict(itertools.pairwise(argv(services[name]["command"])))
        assert pairs["--cluster-enabled"] == "yes" and pairs["--appendfsync"] == "always"
        assert pairs["--maxmemory-policy"] == "noeviction"
    init = services["redis-cluster-init"]
    script = " ".join(argv(init["command"]))
    assert "--cluster create" in script and "--cluster-replicas 1 --cluster-yes" in script
    assert set(init["depends_on"]) == set(nodes) and init["restart"] == "no"
    worker = services["worker-cluster"]
    assert worker["profiles"] == ["cluster"]
    assert worker["environment"]["REDIS_URL"].startswith("redis+cluster://redis-cluster-1:6379,")
    condition = worker["depends_on"]["redis-cluster-init"]["condition"]
    assert condition == "service_completed_successfully"


def test_redis_keeps_its_data_in_a_named_volume(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["redis"]["volumes"]
    assert any(isinstance(v, str) and v.split(":")[:2] == ["redis-data", "/data"] for v in volumes)
    assert "redis-data" in compose["volumes"]


def test_redis_healthcheck_pings_it(services: dict[str, Any]) -> None:
    command = healthcheck_argv(services["redis"]["healthcheck"]["test"])
    assert command[:2] == ["redis-cli", "ping"]


# ---------------------------------------------------------------- workers


def test_gpu_worker_reserves_the_nvidia_gpus(services: dict[str, Any]) -> None:
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    (device,) = devices
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    # Not 1: Docker gives every container with count N the GPUs 0..N-1, so count 1
    # would stack all replicas on GPU 0. `--devices auto` then runs one process per GPU.
    assert device["count"] == "all"
    assert argv(services["worker"]["command"])[1:] == ["worker", "--devices", "auto"]


def test_cpu_worker_is_a_profile_without_gpus(services: dict[str, Any]) -> None:
    worker = services["worker-cpu"]
    assert worker["profiles"] == ["cpu"]
    assert "deploy" not in worker
    assert argv(worker["command"])[1:] == ["worker", "--devices", "cpu"]


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_is_healthy_only_when_aimass_check_passes(
    services: dict[str, Any], name: str
) -> None:
    assert healthcheck_argv(services[name]["healthcheck"]["test"]) == ["aimass", "check"]


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_can_be_scaled(services: dict[str, Any], name: str) -> None:
    worker = services[name]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_waits_for_redis_and_the_published_models(
    services: dict[str, Any], name: str
) -> None:
    depends_on = services[name]["depends_on"]
    assert depends_on["redis"]["condition"] == "service_healthy"
    assert depends_on["export"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_reads_the_models_volume_read_only(services: dict[str, Any], name: str) -> None:
    mounts = [v for v in services[name]["volumes"] if isinstance(v, dict)]
    assert {"type": "volume", "source": "models", "target": "/models", "read_only": True} in mounts
    assert services[name]["environment"]["AIMASS_MODEL_REPOSITORY"] == "/models"


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_finishes_its_batches_when_stopped(services: dict[str, Any], name: str) -> None:
    worker = services[name]
    assert worker["stop_signal"] == "SIGTERM"
    assert duration_s(worker["stop_grace_period"]) >= 60
    # PID 1 has no default signal actions; an init passes SIGTERM on and reaps children.
    assert worker["init"] is True


# ---------------------------------------------------------------- export, flower, producer


def test_export_is_a_one_shot_job_writing_the_models_volume(services: dict[str, Any]) -> None:
    export = services["export"]
    assert export["restart"] == "no"
    # --skip-existing: restarting the stack does not publish the zoo again.
    assert argv(export["command"]) == [
        "aimass",
        "export",
        "zoo",
        "--repository",
        "/models",
        "--skip-existing",
    ]
    assert "models:/models" in export["volumes"]


def test_flower_uses_the_workers_celery_app(services: dict[str, Any]) -> None:
    command = argv(services["flower"]["command"])
    assert command[0] == "celery" and "flower" in command
    app = command[command.index("-A") + 1] if "-A" in command else None
    assert app == "aimass.worker.main"
    published = [str(port) for port in services["flower"]["ports"]]
    assert any(port.endswith(":5555") for port in published)


def test_producer_is_a_tool_profile(services: dict[str, Any]) -> None:
    producer = services["producer"]
    assert producer["profiles"] == ["tools"]
    assert argv(producer["entrypoint"]) == ["aimass"]
    assert producer["build"]["dockerfile"] == "docker/producer.Dockerfile"


# ---------------------------------------------------------------- Dockerfiles


def test_every_referenced_dockerfile_exists_and_runs_as_a_non_root_user(
    services: dict[str, Any],
) -> None:
    dockerfiles = referenced_dockerfiles(services)
    assert set(dockerfiles) >= {"worker", "worker-cpu", "export", "flower", "producer"}
    for service, path in dockerfiles.items():
        assert path.is_file(), f"{service}: {path} does not exist"
        user = instruction(final_stage(path), "USER")
        assert user is not None, f"{path.name}: the final stage has no USER"
        assert user.split(":")[0] not in {"root", "0"}, f"{path.name}: USER {user}"


def test_worker_image_is_cuda_13_with_cudnn() -> None:
    text = (DOCKER_DIR / "worker.Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None, "worker.Dockerfile should take its base image as ARG BASE_IMAGE"
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.\d\d", base[1])


def test_dockerignore_keeps_secrets_models_and_git_out_of_the_images() -> None:
    patterns = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".env", "models", ".venv", "**/__pycache__"} <= patterns
    assert not {"pyproject.toml", "README.md", "docker", "producer", "worker"} & patterns


def test_images_install_only_their_own_extra() -> None:
    helper = load_requirements_helper()
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]

    def names(extra: str) -> set[str]:
        lines = helper.requirements(project, [extra])
        return {helper.normalize(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0]) for line in lines}

    assert "onnxruntime-gpu" in names("worker")
    assert "tensorflow" not in names("worker")
    assert {"tensorflow", "onnxruntime-gpu", "onnxruntime"}.isdisjoint(names("producer"))
    assert "tensorflow" in names("export")


def test_requirements_helper_expands_self_references_with_their_markers() -> None:
    helper = load_requirements_helper()
    project = {
        "name": "Demo_Pkg",
        "dependencies": ["attrs"],
        "optional-dependencies": {
            "base": ["numpy>=1.26", "pywin32; sys_platform == 'win32'"],
            "gpu": ["demo-pkg[base]; platform_machine == 'x86_64'", "numpy>=1.26"],
            "all": ["demo-pkg[base,gpu]"],
        },
    }
    assert helper.requirements(project, ["gpu"]) == [
        "attrs",
        "numpy>=1.26; platform_machine == 'x86_64'",
        "pywin32; (sys_platform == 'win32') and (platform_machine == 'x86_64')",
        "numpy>=1.26",
    ]
    # Once an extra is in unrestricted, its marked expansions add nothing.
    assert helper.requirements(project, ["all"]) == [
        "attrs",
        "numpy>=1.26",
        "pywin32; sys_platform == 'win32'",
    ]
    with pytest.raises(ValueError, match="no extra 'gpus'"):
        helper.requirements(project, ["gpus"])


# ---------------------------------------------------------------- the commands are real


INVOCATIONS = all_aimass_invocations()


@pytest.mark.e2e
def test_the_deployment_runs_the_commands_it_promises() -> None:
    found = {tuple(arguments[:2]) for _, arguments in INVOCATIONS}
    assert {("worker", "--devices"), ("check",), ("export", "zoo")} <= found


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("source", "arguments"),
    INVOCATIONS,
    ids=[f"{source}: aimass {' '.join(arguments)}" for source, arguments in INVOCATIONS],
)
def test_aimass_command_exists_with_its_options(source: str, arguments: list[str]) -> None:
    subcommand = []
    for token in arguments:
        if token.startswith("-"):
            break
        subcommand.append(token)
    result = run_python("-m", "aimass.cli", *subcommand, "--help")
    assert result.returncode == 0, (
        f"{source} runs `aimass {' '.join(arguments)}`, but "
        f"`aimass {' '.join(subcommand)} --help` failed:\n{result.stdout}\n{result.stderr}"
    )
    for option in (token.split("=")[0] for token in arguments if token.startswith("--")):
        if option != "--help":
            assert option in result.stdout, (
                f"{source}: `aimass {' '.join(subcommand)}` has no option {option}:\n"
                f"{result.stdout}"
            )


@pytest.mark.e2e
def test_celery_finds_the_app_flower_is_given() -> None:
    # Exactly how `celery -A aimass.worker.main flower` looks the app up.
    check = (
        "from celery import Celery; from celery.app.utils import find_app; "
        "app = find_app('aimass.worker.main'); "
        "assert isinstance(app, Celery), type(app)"
    )
    result = run_python("-c", check)
    assert result.returncode == 0, result.stderr
