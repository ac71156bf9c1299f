"""``aimass worker``, ``aimass check`` and ``aimass workers``.

Imports only the standard library and ``producer`` at module level, so that
``aimass --help`` is fast and works without the worker extra.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = subparsers.add_parser(
        "worker",
        help="run a worker: one process per GPU, or one on the CPU",
        description="Consume classify and generate jobs for the models in the repository.",
    )
    worker.add_argument(
        "--repository",
        type=Path,
        help="model repository folder (default: $AIMASS_MODEL_REPOSITORY or ./models)",
    )
    worker.add_argument("--devices", help="auto (default), cpu, or GPU indices like 0,1")
    worker.add_argument(
        "--procs-per-gpu",
        type=int,
        help="worker processes per GPU, or on the CPU (default "
        "$AIMASS_PROCS_PER_GPU, else 0: cores / (4 x GPUs), at most 8, "
        "on GPUs; one on the CPU)",
    )
    worker.add_argument(
        "--batch-buckets",
        help="auto (default: fixed batch sizes on GPUs, exact sizes on the "
        "CPU), on, off, or sizes like 1,8,32",
    )
    worker.add_argument("--models", help="serve only these models (comma list)")
    worker.add_argument(
        "--concurrency",
        help="jobs held at once per process (auto: twice the largest batch served, at least 64)",
    )
    worker.add_argument(
        "--max-batch-size",
        help="override the manifests' batch limit: 64, or per model like digits=128,alexnet=64",
    )
    worker.add_argument(
        "--max-queue-delay-ms", type=float, help="override the manifests' queue delay"
    )
    worker.add_argument("--metrics-port", type=int, help="Prometheus port (0: off)")
    worker.add_argument("--hostname", help="Celery node name (default aimass-<device>-<pid>@host)")
    worker.add_argument("--loglevel", help="log level (default $AIMASS_LOG_LEVEL or INFO)")
    worker.set_defaults(handler=run_worker)

    check = subparsers.add_parser(
        "check",
        help="exit 0 when a worker on this host is alive with its models loaded",
        description="Health check for compose and orchestrators.",
    )
    check.add_argument("--any-host", action="store_true", help="accept a worker on any host")
    check.set_defaults(handler=run_check)

    workers = subparsers.add_parser("workers", help="list live workers, their models and queues")
    workers.add_argument("--json", action="store_true", help="print JSON")
    workers.set_defaults(handler=run_workers)


def _settings(args: argparse.Namespace) -> Any:
    from aimass.worker.settings import WorkerSettings

    models = tuple(m for m in (args.models or "").split(",") if m) or None
    return WorkerSettings.from_env().override(
        model_repository=args.repository,
        devices=args.devices,
        models=models,
        concurrency=args.concurrency,
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        metrics_port=args.metrics_port,
        procs_per_gpu=args.procs_per_gpu,
        batch_buckets=args.batch_buckets,
        log_level=args.loglevel.upper() if args.loglevel else None,
        hostname=args.hostname,
    )


def run_worker(args: argparse.Namespace) -> int:
    from aimass.worker.devices import processes_per_device, resolve_devices, use_pci_bus_order

    settings = _settings(args)
    use_pci_bus_order()  # before the GPUs are counted: the children inherit it
    devices = resolve_devices(settings.devices)
    per_device = processes_per_device(settings.procs_per_gpu, devices)
    if len(devices) * per_device > 1:
        return _supervise(settings, devices, per_device)
    return _run_one(settings, devices[0])


def _run_one(settings: Any, device: int | None) -> int:
    from aimass.worker.app import create_app
    from aimass.worker.devices import pin_process, plan_for

    pin_process(device)
    app = create_app(settings, plan_for(settings, device))
    label = "cpu" if device is None else f"gpu{device}"
    hostname = settings.hostname or f"aimass-{label}-{os.getpid()}@{socket.gethostname()}"
    # JSON logs: no banner either, every line of output is one JSON object.
    quiet = ["--quiet"] if settings.log_format == "json" else []
    return _celery_main(
        app,
        [
            *quiet,
            "worker",
            "--pool=threads",
            f"--concurrency={settings.jobs_held()}",  # Celery's threads: models not loaded yet
            f"--loglevel={settings.log_level}",
            f"--hostname={hostname}",
            "--without-gossip",
            "--without-mingle",
        ],
    )


def _celery_main(app: Any, argv: list[str]) -> int:
    """``celery worker`` run as ``app.worker_main`` runs it, but returning its exit code:
    ``worker_main`` drops it, so a worker that could not start exited 0."""
    from celery.bin.celery import celery

    celery.params[0].default = app
    try:
        code = celery.main(args=argv, standalone_mode=False)
    finally:
        celery.params[0].default = None
    return code if isinstance(code, int) else 0


def _supervise(settings: Any, devices: list[int | None], per_device: int) -> int:
    """``per_device`` child workers on each device, each pinned to its device and to a
    share of the cores, restarted when one dies (worker/supervisor.py)."""
    from aimass.worker.sessions import cpu_threads_per_process
    from aimass.worker.supervisor import Child, Supervisor, cpu_shares

    # The same program again (the console script, or whatever ran this module), with
    # only the flags that make each child one process on one device changed.
    prefix = sys.orig_argv[: len(sys.orig_argv) - len(sys.argv) + 1]
    slots = [(device, index) for device in devices for index in range(per_device)]
    shares = cpu_shares(len(slots))
    env = dict(os.environ)
    if shares[0] is None and not settings.intra_op_threads:
        # Too few cores to pin: split ONNX Runtime's threads between the children.
        env["AIMASS_INTRA_OP_THREADS"] = str(cpu_threads_per_process(len(slots)))
    children = []
    for number, ((device, index), cpus) in enumerate(zip(slots, shares, strict=True)):
        argv = _replace_flag(
            list(sys.argv[1:]), "--devices", "cpu" if device is None else str(device)
        )
        argv = _replace_flag(argv, "--procs-per-gpu", "1")
        # The container's port is the supervisor's; each child has the next ones.
        port = settings.metrics_port + 1 + number if settings.metrics_port else 0
        argv = _replace_flag(argv, "--metrics-port", str(port))
        label = f"{'cpu' if device is None else f'gpu{device}'}.{index}"
        if settings.hostname:  # one Celery node name each: duplicates confuse Celery
            argv = _replace_flag(argv, "--hostname", child_hostname(settings.hostname, label))
        children.append(Child(label, [*prefix, *argv], env, cpus=cpus, port=port))
    _configure_logging(settings.log_level, settings.log_format)
    return Supervisor(children).run(settings.metrics_port)


def child_hostname(hostname: str, label: str) -> str:
    """The node name of one child of a supervisor given ``--hostname``: ``name@host``
    becomes ``name.<label>@host`` (``worker.gpu0.1@node7``)."""
    name, at, host = hostname.partition("@")
    return f"{name}.{label}{at}{host}"


def _configure_logging(level: str, log_format: str) -> None:
    import logging

    from aimass.worker.logs import use_json

    logging.basicConfig(level=level, format="[%(asctime)s: %(levelname)s/supervisor] %(message)s")
    if log_format == "json":
        use_json()


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _replace_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = True
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return [*out, flag, value]


def _redis(url: str) -> Any:
    """A Redis client that gives up after a few seconds (a health check must answer)."""
    from aimass.protocol.connections import connect

    return connect(url, socket_timeout=5, socket_connect_timeout=5)


def run_check(args: argparse.Namespace) -> int:
    """With a metrics port: this container's /readyz (every worker process of it). Else
    the heartbeats of this host's workers in Redis: every one ready."""
    from aimass.worker.settings import WorkerSettings

    settings = WorkerSettings.from_env()
    if settings.metrics_port and not args.any_host:
        return _check_endpoint(settings.metrics_port)
    return _check_heartbeats(settings, args.any_host)


def _check_endpoint(port: int) -> int:
    from aimass.worker.endpoints import probe

    answer = probe(f"http://127.0.0.1:{port}/readyz")
    if answer is True:
        print(f"healthy: ready (:{port}/readyz)")
        return 0
    print(f"unhealthy: :{port}/readyz {answer}", file=sys.stderr)
    return 1


def _check_heartbeats(settings: Any, any_host: bool) -> int:
    from aimass.protocol.heartbeats import live_heartbeats

    try:
        with _redis(settings.redis_url) as client:
            infos = live_heartbeats(client)
    except Exception as exc:
        print(f"unhealthy: Redis unreachable ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    host = socket.gethostname()
    mine = [i for i in infos if any_host or i.host == host]
    allowed = settings.allow_cpu_fallback  # here, or in the worker's own settings
    fallen = [i for i in mine if i.cpu_fallback and not (allowed or i.cpu_fallback_allowed)]
    for info in fallen:
        print(
            f"unhealthy: {info.hostname} was asked for {info.requested_device} "
            "but runs on the CPU (the CUDA provider could not start; see its log). Set "
            "AIMASS_ALLOW_CPU_FALLBACK=1 to accept that.",
            file=sys.stderr,
        )
    if fallen:
        return 1
    unready = [i for i in mine if not (i.ready and i.models)]
    if mine and not unready:
        for info in mine:
            models = ", ".join(f"{m.name} v{m.version}" for m in info.models)
            print(f"healthy: {info.hostname} serving {models}")
        return 0
    if mine:
        print(
            f"unhealthy: {len(unready)} of {len(mine)} worker(s) on {host} not ready or "
            "without models",
            file=sys.stderr,
        )
    else:
        print(f"unhealthy: no live worker on {host}", file=sys.stderr)
    return 1


# `aimass workers` warns when Redis uses this share of its maxmemory.
REDIS_MEMORY_WARNING = 0.9


def _fullest_memory(client: Any) -> dict[str, Any]:
    """``INFO memory`` of the Redis, or of a cluster's primary that uses the most."""
    from aimass.protocol.shards import is_cluster_client

    if not is_cluster_client(client):
        return dict(client.info("memory"))
    infos: list[dict[str, Any]] = [
        dict(client.info("memory", target_nodes=node)) for node in client.get_primaries()
    ]
    return max(infos, key=lambda info: int(info.get("used_memory", 0)))


def run_workers(args: argparse.Namespace) -> int:
    from aimass.protocol.heartbeats import live_heartbeats, served_models
    from aimass.protocol.queues import queue_depth
    from aimass.worker.settings import WorkerSettings

    settings = WorkerSettings.from_env()
    with _redis(settings.redis_url) as client:
        infos = live_heartbeats(client)
        depths = {name: queue_depth(client, name) for name in served_models(infos)}
        memory = _fullest_memory(client)
    used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    if args.json:
        print(
            json.dumps(
                {
                    "workers": [info.as_json() for info in infos],
                    "queue_depths": depths,
                    "redis_memory": {"used_bytes": used, "max_bytes": limit},
                },
                indent=2,
            )
        )
        return 0
    if limit and used >= REDIS_MEMORY_WARNING * limit:
        print(
            f"WARNING: Redis uses {used / limit:.0%} of its maxmemory ({used / 2**30:.2f} of "
            f"{limit / 2**30:.2f} GiB): at its limit it refuses new jobs and results "
            "(noeviction). Raise maxmemory, or drain or shorten results' lifetime "
            "(AIMASS_RESULT_TTL_S).",
            file=sys.stderr,
        )
    if not infos:
        print("no live workers")
        return 1
    for info in infos:
        fallback = (
            f"  CPU FALLBACK: {info.requested_device} was asked for" if info.cpu_fallback else ""
        )
        print(
            f"{info.hostname}  pid {info.pid}  {info.device}  "
            f"{'ready' if info.ready else 'starting'}{fallback}"
        )
        for m in info.models:
            sizes = f"buckets {','.join(map(str, m.buckets))}" if m.buckets else "exact sizes"
            print(
                f"  {m.name:<16} v{m.version:<3} {m.kind:<9} "
                f"batch<={m.max_batch_size:<4} {sizes}  "
                f"delay {m.max_queue_delay_ms:.1f} ms  "
                f"{','.join(m.providers)}  queued {depths.get(m.name, 0)}"
            )
    return 0
