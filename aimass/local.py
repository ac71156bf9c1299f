"""``aimass up`` and ``aimass demo``: a whole local stack on this machine.

Imports only the standard library and ``aimass.producer`` at module level, so that
``aimass --help`` is fast and works without the worker extra.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aimass.protocol.manifest import resolve_repository


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, helptext in (
        ("up", "run a local stack in the foreground: Redis, the zoo, workers"),
        ("demo", "run the whole system end to end on this machine and report"),
    ):
        stack = subparsers.add_parser(name, help=helptext, description=helptext)
        stack.add_argument(
            "--repository",
            type=Path,
            help="model repository (default $AIMASS_MODEL_REPOSITORY or ./models)",
        )
        stack.add_argument("--workers", type=int, default=1, help="worker processes (1)")
        stack.add_argument("--devices", default="auto", help="auto, cpu or GPU indices")
        stack.add_argument(
            "--metrics-port", type=int, default=0, help="first worker's Prometheus port (0: off)"
        )
        stack.add_argument(
            "--zoo",
            default="digits,digits-gan",
            help="models to train and publish when missing "
            "(default digits,digits-gan; '' for none)",
        )
        stack.add_argument(
            "--quick",
            action="store_true",
            help="quick training when the zoo is missing (for tests)",
        )
        stack.set_defaults(handler=run_up if name == "up" else run_demo)
    demo = subparsers.choices["demo"]
    demo.add_argument(
        "--output",
        type=Path,
        default=Path("aimass-demo-grid.png"),
        help="where to write the generated grid (aimass-demo-grid.png)",
    )
    demo.add_argument("--concurrency", type=int, default=16, help="jobs in flight (16)")


def _stack(args: argparse.Namespace) -> Any:
    from aimass.stack import LocalStack, StackOptions

    repository = resolve_repository(args.repository)
    return LocalStack(
        StackOptions(
            repository=repository,
            workers=args.workers,
            devices=args.devices,
            redis_url=os.environ.get("REDIS_URL") or None,
            quick=args.quick,
            zoo=tuple(name for name in args.zoo.split(",") if name),
            metrics_port=args.metrics_port,
        )
    )


def run_up(args: argparse.Namespace) -> int:
    def stop_on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on_term)
    with _stack(args) as stack:
        print("Press Ctrl-C to stop.", flush=True)
        try:
            while stack.alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("\nstopping...", flush=True)
            return 0
        print("a worker exited; stopping", file=sys.stderr)
        return 1


def run_demo(args: argparse.Namespace) -> int:
    from aimass.demo import run_demo as demo
    from aimass.producer.client import Client

    with _stack(args) as stack, Client(stack.redis_url) as client:
        return demo(client, args.output, concurrency=args.concurrency)
