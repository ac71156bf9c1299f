"""The machine a benchmark ran on, for the record: CPU, memory, GPU and versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import redis


def machine_info(provider: str, redis_url: str) -> dict[str, Any]:
    import celery
    import kombu
    import onnxruntime
    import psutil

    client = redis.Redis.from_url(redis_url)
    try:
        redis_version = client.info("server").get("redis_version")
    finally:
        client.close()
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(affinity) if affinity else os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "celery": celery.__version__,
        "kombu": kombu.__version__,
        "redis_server": redis_version,
        "provider": provider,
        "gpu": _gpu_name() if provider == "cuda" else None,
    }


def _gpu_name() -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    done = subprocess.run(
        [smi, "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None
