"""``aimass bench``: raw ONNX Runtime, a plain Celery worker and aimass, on one machine.

Imports only the standard library and ``producer`` at module level, so that
``aimass --help`` stays fast and works without the worker extra.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

MODELS = ("digits", "alexnet", "wine")  # wine: a tensor model of 13 features, no image
DEFAULT_MODELS = ("digits", "alexnet")
DEFAULT_JSON = Path("bench-results/bench.json")
DEFAULT_PLOT = Path("bench-results/bench.png")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,8,32, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,8,32, got {text!r}")
    return values


def _count(zero: str, like: int) -> Callable[[str], int]:
    """A parser of a whole number, 0 included (``zero``: what 0 asks for)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(
                f"expected a whole number like {like} (0: {zero}), got {text!r}"
            )
        return value

    return parse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="measure aimass against ONNX Runtime alone and a plain Celery worker",
        description="Measure, on this machine: ONNX Runtime alone (batch 1 and its best "
        "batch), a plain Celery worker (one task per image, float32 JSON), and "
        "`aimass worker` fed by closed-loop producers. Starts its own Redis. "
        "Prints a table and the goals (PASS/MISS), writes JSON and a PNG plot. "
        "See docs/performance.md.",
    )
    bench.add_argument(
        "--model",
        action="append",
        choices=MODELS,
        help="model to measure (repeat for several; default: digits and alexnet)",
    )
    bench.add_argument(
        "--concurrency",
        type=_int_list,
        default=[1, 8, 32],
        help="jobs each producer keeps in flight, one level per value (default 1,8,32)",
    )
    bench.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="end a round's window after this many jobs (default 0: "
        "windows are time-boxed by --duration only)",
    )
    bench.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="repeat every measurement this many times; medians are reported (default 3)",
    )
    bench.add_argument(
        "--duration",
        type=float,
        default=3.0,
        help="seconds measured per level and round (default 3)",
    )
    bench.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of load before each window opens (default 1)",
    )
    bench.add_argument("--producers", type=int, default=1, help="producer processes (default 1)")
    bench.add_argument(
        "--provider",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu (default; the worker runs with --devices cpu) or cuda (--devices auto)",
    )
    bench.add_argument(
        "--repository",
        type=Path,
        help="model repository (default: $AIMASS_MODEL_REPOSITORY or ./models)",
    )
    bench.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="benchmark a seeded stand-in of the same shape when a model is "
        "missing from the repository (reported as synthetic)",
    )
    bench.add_argument(
        "--images-per-job",
        type=int,
        default=16,
        help="images per job in the multi-image run on digits, and with "
        "--provider cuda on AlexNet too (default 16; 0 skips it)",
    )
    bench.add_argument(
        "--multi-concurrency",
        type=int,
        default=8,
        help="jobs in flight per producer in the multi-image run (default 8)",
    )
    bench.add_argument(
        "--bulk",
        type=_count("not run", 6000),
        default=0,
        metavar="JOBS",
        help="on digits, also send this many one-image jobs at once to each system and "
        "wait for them, every round: the rate a worker drains a backlog at, and what each "
        "job costs the broker then (default 0: not run; docs/performance.md, sizing the "
        "broker)",
    )
    bench.add_argument(
        "--procs-per-gpu",
        type=_count("the worker's automatic choice", 4),
        help="passed to `aimass worker --procs-per-gpu`: worker processes "
        "per GPU, or on the CPU (default: the worker's own)",
    )
    bench.add_argument(
        "--naive-pool",
        choices=("solo", "threads", "prefork"),
        default="solo",
        help="Celery pool of the naive worker (default solo,"
        " the best of the three on a small machine)",
    )
    bench.add_argument(
        "--naive-concurrency", type=int, help="the naive worker's --concurrency (default: Celery's)"
    )
    bench.add_argument(
        "--raw-batch-sizes",
        type=_int_list,
        default=[1, 2, 4, 8, 16, 32, 64, 128],
        help="batch sizes ONNX Runtime alone is timed at (default 1,2,...,128;"
        " the sweep stops once two sizes in a row fall behind the best)",
    )
    bench.add_argument(
        "--raw-seconds",
        type=float,
        default=0.5,
        help="seconds timed per raw batch size (default 0.5)",
    )
    bench.add_argument(
        "--skip", default="", help="systems not to run, comma list of raw, naive, aimass"
    )
    bench.add_argument("--json", type=Path, help=f"results file (default {DEFAULT_JSON})")
    bench.add_argument(
        "--plot", type=Path, help=f"PNG plot (default {DEFAULT_PLOT}; needs matplotlib)"
    )
    bench.add_argument(
        "--logs", type=Path, help="keep the workers' and producers' logs in this folder"
    )
    bench.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    bench.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from aimass.bench import plot, report
    from aimass.bench.models import ModelMissing
    from aimass.bench.runner import BenchConfig, run_bench

    plot_path = args.plot or DEFAULT_PLOT
    try:
        plot.check_plotting()
    except plot.PlotUnavailable as exc:
        if args.plot is not None:
            print(f"aimass bench: {exc}", file=sys.stderr)
            return 2
        print(f"aimass bench: no plot will be written: {exc}", file=sys.stderr)
        plot_path = None
    skip = tuple(s.strip() for s in args.skip.split(",") if s.strip())
    unknown = set(skip) - {"raw", "naive", "aimass"}
    if unknown:
        print(f"aimass bench: --skip {args.skip!r}: expected raw, naive or aimass", file=sys.stderr)
        return 2
    from aimass.protocol.manifest import resolve_repository

    config = BenchConfig(
        models=list(dict.fromkeys(args.model or DEFAULT_MODELS)),
        concurrency=args.concurrency,
        rounds=max(1, args.rounds),
        duration_s=args.duration,
        warmup_s=args.warmup,
        jobs=max(0, args.jobs),
        producers=max(1, args.producers),
        provider=args.provider,
        repository=resolve_repository(args.repository),
        allow_synthetic=args.allow_synthetic,
        images_per_job=args.images_per_job,
        multi_concurrency=args.multi_concurrency,
        bulk_jobs=args.bulk,
        naive_pool=args.naive_pool,
        naive_concurrency=args.naive_concurrency,
        procs_per_gpu=args.procs_per_gpu,
        raw_batch_sizes=args.raw_batch_sizes,
        raw_seconds=args.raw_seconds,
        skip=skip,
        log_dir=args.logs,
        command=shlex.join(["aimass", *sys.argv[1:]]) if "bench" in sys.argv[1:2] else None,
    )
    try:
        results = run_bench(config)
    except ModelMissing as exc:
        print(f"aimass bench: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a worker or producer that would not start or died
        print(f"aimass bench: {exc}", file=sys.stderr)
        return 1
    report.summarize(results)
    json_path = args.json or DEFAULT_JSON
    report.write_json(results, json_path)
    if plot_path is not None:
        plot.write_plot(results, plot_path)
    print(report.format_report(results))
    print(f"\nwrote {json_path}" + (f" and {plot_path}" if plot_path else ""))
    missed = [g for g in results["goals"] if g["status"] == "MISS"]
    return 1 if args.strict and missed else 0
