"""``aimass doctor``: what a worker gets on this machine, model by model, before anyone
trusts the machine with jobs.

For each device asked for (every GPU by default, else the CPU) and each model of the
repository, it loads the model exactly as ``aimass worker`` would (``Runtime.build``) and
reports: the execution provider the sessions really got (and why not CUDA, where CUDA
was asked for), the CUDA and cuDNN libraries loaded and from where, the batch limit and
its source, the buckets and whether they share one copy of the weights (memory with and
without sharing), each bucket's settled run time, what one change of input shape costs a
plain dynamic session, how far padded outputs stray from exact ones, and GPU
utilization and memory. On a CPU machine the same checks run on the CPU provider, with
buckets on, so that CI runs them.

Imports only the standard library at module level, so that ``aimass --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Shared libraries worth naming: where CUDA, cuDNN and cuBLAS came from decides whether
# the CUDA provider works at all (NVIDIA's wheels, or the system's).
CUDA_LIBRARIES = (
    "libcuda.so",
    "libcudart",
    "libcudnn",
    "libcublas",
    "libcublasLt",
    "libcufft",
    "libcurand",
    "libnvrtc",
    "libonnxruntime_providers_cuda",
    "libonnxruntime_providers_tensorrt",
    "libnvinfer",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = subparsers.add_parser(
        "doctor",
        help="check this machine: providers, CUDA, buckets, shared weights, timings",
        description="Load every model of the repository as a worker would, on each device, "
        "and report what it got: the execution provider (and why not CUDA), "
        "the CUDA libraries loaded, buckets and shared weights, settled run "
        "times, the cost of a shape change, padded against exact outputs, and "
        "GPU load. Exits 1 when a GPU was asked for and the CUDA provider did "
        "not start, or a model could not be loaded.",
    )
    doctor.add_argument(
        "--repository",
        type=Path,
        help="model repository (default: $AIMASS_MODEL_REPOSITORY or ./models)",
    )
    doctor.add_argument(
        "--devices",
        default="auto",
        help="auto (default: every GPU, else the CPU), cpu, or GPU indices",
    )
    doctor.add_argument("--models", help="only these models (comma list)")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from aimass.worker.devices import resolve_devices, use_pci_bus_order
    from aimass.worker.settings import WorkerSettings

    use_pci_bus_order()
    settings = WorkerSettings.from_env().override(
        model_repository=args.repository,
        devices=args.devices,
        models=tuple(m for m in (args.models or "").split(",") if m) or None,
    )
    devices = resolve_devices(settings.devices)
    with _output_to_stderr():  # what ONNX Runtime and CUDA print is not the report
        report: dict[str, Any] = {"onnxruntime": _onnxruntime(), "devices": []}
        for device in devices:
            report["devices"].append(_check_device(settings, device))
        report["cuda_libraries"] = _loaded_libraries()
        report["gpus"] = _gpus()
        report["ok"] = all(d["ok"] for d in report["devices"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 0 if report["ok"] else 1


@contextlib.contextmanager
def _output_to_stderr() -> Iterator[None]:
    """Send whatever the libraries print (``preload_dlls`` prints each library it cannot
    load, on standard output) to standard error meanwhile: file descriptor 1 and
    ``sys.stdout`` both, so that ``--json`` prints JSON alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _onnxruntime() -> dict[str, Any]:
    import importlib.metadata

    import onnxruntime as ort

    packages = {}
    for name in ("onnxruntime-gpu", "onnxruntime"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "version": ort.__version__,
        "packages": packages,
        "available_providers": list(ort.get_available_providers()),
    }


def _check_device(settings: Any, device: int | None) -> dict[str, Any]:
    """Every model on one device: a GPU index, or the CPU (``None``)."""
    from dataclasses import replace

    from aimass.worker.devices import plan_for, visible_device
    from aimass.worker.served import ServedModels

    label = "cpu" if device is None else f"gpu{device}"
    result: dict[str, Any] = {"device": label, "models": [], "ok": True}
    if device is not None:
        result["cuda_visible_device"] = visible_device(
            device, os.environ.get("CUDA_VISIBLE_DEVICES")
        )
        result["preload"] = _preload()
    # On the CPU, buckets on: the same checks as on a GPU, where they are on by default.
    buckets = (
        "on" if device is None and settings.batch_buckets == "auto" else settings.batch_buckets
    )
    runtime = ServedModels(replace(settings, batch_buckets=buckets), plan_for(settings, device))
    names = list(settings.models) or runtime.repository.names()
    _prime(runtime, names)
    for name in names:
        try:
            model = _check_model(runtime, name)
        except Exception as exc:
            model = {"name": name, "error": f"{type(exc).__name__}: {exc}"}
            result["ok"] = False
        if device is not None and "CUDAExecutionProvider" not in model.get("providers", []):
            model.setdefault("cuda_missing", _why_not_cuda(runtime, name))
            result["ok"] = False
        result["models"].append(model)
    return result


def _prime(runtime: Any, names: list[str]) -> None:
    """One session made and dropped before anything is measured: ONNX Runtime's own
    one-off set-up (its environment, thread pools, the CUDA context) would otherwise be
    counted against the first model's memory."""
    import onnx  # noqa: F401 (read by the weight sharing; its import is not a model's cost)

    from aimass.worker.sessions import create_session

    for name in names:
        try:
            create_session(runtime.repository.resolve(name).model_file, runtime.plan)
            return
        except Exception:  # reported where that model is checked
            continue


def _check_model(runtime: Any, name: str) -> dict[str, Any]:
    from aimass.worker.sessions import create_session, release_free_memory

    version = runtime.repository.resolve(name)
    before = _memory_in_use(runtime.plan)
    started = time.monotonic()
    loaded = runtime.build(version)
    load_ms = (time.monotonic() - started) * 1000.0
    shared_bytes = _memory_in_use(runtime.plan) - before
    try:
        described = loaded.describe()
        model: dict[str, Any] = {
            "name": name,
            "version": version.version,
            "kind": described["kind"],
            "providers": described["providers"],
            "load_ms": round(load_ms, 1),
            "batch_limit": described["max_batch_size"],
            "batch_limit_source": described["batch_limit_source"],
            "buckets": described["buckets"],
            "weights_shared": described["weights_shared"],
            "sharing_refused": described["sharing_refused"],
            "shared_weight_bytes": described["shared_weight_bytes"],
            "settled_ms": described["settled_ms"],
        }
        # One plain session (every size on one session, as without buckets) for both.
        plain = create_session(loaded.version.model_file, runtime.plan)
        model["padded_vs_exact"] = _padding_error(plain, loaded)
        model["shape_change_ms"] = _shape_change_cost(plain, loaded)
    finally:
        loaded.stop(timeout=0)
        del loaded
        release_free_memory()
    if model["buckets"]:
        model["memory_bytes"] = {
            "shared": shared_bytes,
            "own_copies": _own_copies_bytes(runtime, version, model["buckets"]),
            "measured": "gpu" if runtime.plan.gpu is not None else "process rss",
        }
    return model


def _sample_feeds(logic: Any, size: int, seed: int = 0) -> dict[str, Any]:
    """Inputs of ``size`` rows: random where the input is floating point, the warm-up's
    own values elsewhere (labels must stay within the model's classes)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = dict(logic.warmup_feeds(size))
    for name, array in feeds.items():
        if array.dtype.kind == "f":
            feeds[name] = rng.random(array.shape).astype(array.dtype)
        elif array.dtype == np.uint8:
            feeds[name] = rng.integers(0, 256, array.shape, dtype=np.uint8)
    return feeds


def _padding_error(plain: Any, loaded: Any) -> dict[str, Any] | None:
    """Outputs of a batch padded up to its bucket against the same batch run at its exact
    size on a plain session: the largest absolute difference."""
    from aimass.worker.runs import run_in_chunks

    buckets = loaded.batcher.buckets
    if not buckets:
        return None
    size = next((s for s in range(1, buckets[-1] + 1) if s not in buckets), buckets[0])
    feeds = _sample_feeds(loaded.logic, size)
    padded, ran = run_in_chunks(loaded.batcher.runner, [feeds], buckets[-1], buckets)
    exact = plain.run(None, feeds)
    error = max(
        float(abs(p.astype("float64") - e.astype("float64")).max())
        for p, e in zip(padded, exact, strict=True)
    )
    return {"size": size, "bucket": ran, "max_abs_diff": error}


def _shape_change_cost(session: Any, loaded: Any, rounds: int = 3) -> float:
    """What a plain session (every size on one session) pays for a run whose batch size
    differs from its previous run's, over the settled time of that size, in ms."""
    from aimass.worker.buckets import settle

    small, large = (
        _sample_feeds(loaded.logic, size) for size in (1, max(2, loaded.batcher.max_batch_size))
    )
    settled = settle(lambda: session.run(None, small))
    costs = []
    for _ in range(rounds):
        session.run(None, large)
        started = time.perf_counter()
        session.run(None, small)
        costs.append((time.perf_counter() - started) * 1000.0 - settled)
    return round(max(0.0, statistics.median(costs)), 3)


def _own_copies_bytes(runtime: Any, version: Any, buckets: list[int]) -> int:
    """Memory that the same bucket sessions take when each holds its own weights."""
    from aimass.worker.sessions import create_bucket_sessions, release_free_memory

    before = _memory_in_use(runtime.plan)
    sessions, _ = create_bucket_sessions(version.model_file, runtime.plan, buckets, share=False)
    used = _memory_in_use(runtime.plan) - before
    del sessions
    release_free_memory()
    return used


def _memory_in_use(plan: Any) -> int:
    """Bytes in use on the plan's device: the GPU's (NVML), or this process's RSS."""
    if plan.gpu is not None:
        readings = _gpus()
        if readings:
            return int(readings[0]["memory_used"])
    import psutil

    return int(psutil.Process().memory_info().rss)


def _preload() -> str:
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return "not available in this onnxruntime (older than 1.21)"
    try:
        preload()
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"
    return "ok"


def _why_not_cuda(runtime: Any, name: str) -> str:
    """Why a session asked for CUDA did not get it: the error ONNX Runtime gives when it
    may not fall back to the CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (
            "this onnxruntime has no CUDA provider: install aimass[gpu] "
            "(onnxruntime-gpu with NVIDIA's CUDA and cuDNN wheels)"
        )
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    options.log_severity_level = 4
    try:
        ort.InferenceSession(
            str(runtime.repository.resolve(name).model_file),
            options,
            providers=[("CUDAExecutionProvider", {"device_id": 0})],
        )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "unknown: a CUDA-only session started when asked alone"


def _loaded_libraries() -> dict[str, str]:
    """The CUDA libraries this process has loaded, each with its file."""
    found: dict[str, str] = {}
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        path = line.split()[-1] if "/" in line else ""
        base = os.path.basename(path)
        for name in CUDA_LIBRARIES:
            if base.startswith(name + ".") or base.startswith(name + "-") or base == name:
                found.setdefault(base, path)
    return found


def _gpus() -> list[dict[str, Any]]:
    from aimass.worker.gpu import Nvml

    nvml = Nvml(cuda_visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
    try:
        return [
            {
                "index": r.index,
                "utilization": r.utilization,
                "memory_used": r.memory_used,
                "memory_total": r.memory_total,
            }
            for r in nvml.read()
        ]
    finally:
        nvml.close()


def _print_table(report: dict[str, Any]) -> None:
    ort = report["onnxruntime"]
    packages = ", ".join(f"{k} {v}" for k, v in ort["packages"].items())
    print(
        f"onnxruntime {ort['version']} ({packages}); providers: "
        f"{', '.join(ort['available_providers'])}"
    )
    for device in report["devices"]:
        extra = (
            f", CUDA_VISIBLE_DEVICES entry {device['cuda_visible_device']}, preload "
            f"{device['preload']}"
            if "preload" in device
            else ""
        )
        print(f"\n{device['device']}{extra}: {'OK' if device['ok'] else 'PROBLEM'}")
        for model in device["models"]:
            _print_model(model)
    libraries = report["cuda_libraries"]
    print("\nCUDA libraries loaded: " + (", ".join(libraries.values()) or "none"))
    for gpu in report["gpus"]:
        print(
            f"GPU {gpu['index']}: {gpu['utilization']:.0%} busy, "
            f"{gpu['memory_used'] / 2**30:.1f} of {gpu['memory_total'] / 2**30:.1f} GiB"
        )


def _print_model(model: dict[str, Any]) -> None:
    if "error" in model:
        print(f"  {model['name']}: could not load: {model['error']}")
        return
    print(
        f"  {model['name']} v{model['version']} ({model['kind']}) on "
        f"{', '.join(model['providers'])}; loaded in {model['load_ms']:.0f} ms"
    )
    if "cuda_missing" in model:
        print(f"    no CUDA: {model['cuda_missing']}")
    print(
        f"    batch limit {model['batch_limit']} ({model['batch_limit_source']}); "
        f"buckets {model['buckets'] or 'none (exact sizes)'}"
    )
    if model["weights_shared"]:
        sharing = f"{model['shared_weight_bytes'] / 2**20:.1f} MiB shared by every bucket"
    elif model["sharing_refused"]:
        sharing = f"own copies ({model['sharing_refused']})"
    else:
        sharing = "nothing large enough to share"
    memory = model.get("memory_bytes")
    if memory:
        sharing += (
            f"; {memory['measured']} {memory['shared'] / 2**20:+.1f} MiB shared, "
            f"{memory['own_copies'] / 2**20:+.1f} MiB own copies"
        )
    print(f"    weights: {sharing}")
    settled = ", ".join(f"{size}: {ms:.2f}" for size, ms in model["settled_ms"].items())
    print(f"    settled run time (ms) by batch size: {settled}")
    print(f"    a shape change on a plain session: +{model['shape_change_ms']:.2f} ms")
    padded = model["padded_vs_exact"]
    if padded:
        print(
            f"    {padded['size']} inputs padded to {padded['bucket']}: largest "
            f"difference from exact {padded['max_abs_diff']:.2e}"
        )


if __name__ == "__main__":
    from aimass.cli import main

    sys.exit(main(["doctor", *sys.argv[1:]]))
