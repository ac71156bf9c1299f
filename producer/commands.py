"""Producer commands: ``aimass classify``, ``generate``, ``status`` and ``result``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    classify = subparsers.add_parser("classify", help="classify images through the queue")
    classify.add_argument("images", nargs="+", type=Path, help="PNG, JPEG or NPY files")
    classify.add_argument("--model", required=True)
    classify.add_argument("--version", type=int)
    classify.add_argument("--top-k", type=int, default=5)
    classify.add_argument("--no-wait", action="store_true", help="print the job id and exit")
    classify.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    classify.add_argument("--json", action="store_true", help="print JSON")
    classify.set_defaults(handler=run_classify)

    status = subparsers.add_parser("status", help="print a job's status")
    status.add_argument("job_id")
    status.set_defaults(handler=run_status)

    result = subparsers.add_parser("result", help="print a job's result")
    result.add_argument("job_id")
    result.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for it")
    result.add_argument("--json", action="store_true", help="print JSON")
    result.set_defaults(handler=run_result)


def _client() -> Any:
    from producer.client import Client

    return Client.from_env()


def run_classify(args: argparse.Namespace) -> int:
    with _client() as client:
        job = client.classify([p for p in args.images], model=args.model,
                              version=args.version, top_k=args.top_k)
        if args.no_wait:
            print(job.id)
            return 0
        result = job.result(timeout=args.timeout)
    _print_classification(result, [str(p) for p in args.images], args.json)
    return 0


def _print_classification(result: dict[str, Any], names: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for name, predictions in zip(names, result["predictions"], strict=True):
        best = predictions[0]
        others = ", ".join(f"{p['label']} {p['score']:.3f}" for p in predictions[1:])
        extra = f"  [{others}]" if others else ""
        print(f"{name}: {best['label']} ({best['score']:.3f}){extra}")


def run_status(args: argparse.Namespace) -> int:
    with _client() as client:
        print(client.job(args.job_id).status())
    return 0


def run_result(args: argparse.Namespace) -> int:
    from producer.errors import AimassError

    with _client() as client:
        job = client.job(args.job_id)
        try:
            result = job.result(timeout=args.wait)
        except AimassError as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    if "images" in result:
        result = {**result, "images": f"<{len(result['images'])} images>"}
    print(json.dumps(result, indent=2 if args.json else None, default=str))
    return 0
