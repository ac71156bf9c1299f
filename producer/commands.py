"""Producer commands: ``aimass classify``, ``generate``, ``infer``, ``status``, ``result``
and ``cancel`` (and ``dead``, producer/dead_letters.py).

Human-readable output by default, ``--json`` for scripts. Exit codes: 0 done, 1 the
job failed, expired or is unknown (the typed error is printed, ``InvalidInput: ...``),
2 usage (bad arguments, unreadable files, a job the contract refuses), 3 the job did
not finish within the wait. Only the standard library is imported at module level, so
``aimass --help`` stays quick.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from aimass.producer import dead_letters
from aimass.producer.text_command import add_text_options, run_text

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FINISHED = 3
# Images per classify job when many are given (the contract allows up to 1024).
IMAGES_PER_JOB = 256

EPILOG = (
    "exit codes: 0 done, 1 job failed/expired/unknown, 2 usage, "
    "3 not finished within the wait. Redis: $REDIS_URL."
)

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    classify = subparsers.add_parser(
        "classify",
        help="classify images or feature vectors through the queue",
        epilog=EPILOG,
        description="Send images (or feature vectors) to a classifier and print the top "
        "labels of each.",
    )
    classify.add_argument("images", nargs="*", type=Path, help="PNG, JPEG or NPY files")
    classify.add_argument(
        "--features",
        action="append",
        type=parse_features,
        metavar="X,Y,...",
        help="one feature vector, comma-separated numbers (e.g. --model wine --features "
        "13.2,1.78,...); repeat for several",
    )
    classify.add_argument("--model", required=True, help="model name, e.g. digits")
    classify.add_argument("--version", type=int, help="pin a model version (default: newest)")
    classify.add_argument("--top-k", type=int, default=5, help="labels per image (5)")
    _add_submit_options(classify)
    classify.set_defaults(handler=_guarded(run_classify))

    generate = subparsers.add_parser(
        "generate",
        help="generate images (a PNG grid), or text with --prompt",
        epilog=EPILOG,
        description="Ask a generator for images; tile them into one PNG you can look at. "
        "With --prompt, ask a sequence model for the text that follows it.",
    )
    generate.add_argument("--model", required=True, help="generator name, e.g. digits-gan")
    generate.add_argument("--version", type=int, help="pin a model version (default: newest)")
    generate.add_argument("--label", type=int, help="class of every image (default: random)")
    generate.add_argument("-n", "--count", type=int, default=16, help="images (16)")
    generate.add_argument("--seed", type=int, help="seed, for the same images again")
    generate.add_argument("-o", "--output", type=Path, help="write the grid PNG here")
    generate.add_argument("--columns", type=int, help="tiles per row (default: square grid)")
    generate.add_argument("--scale", type=int, help="upscale factor (default: tiles ~128 px)")
    add_text_options(generate)
    _add_submit_options(generate)
    generate.set_defaults(handler=_guarded(run_generate))

    infer = subparsers.add_parser(
        "infer",
        help="run a model on named tensors",
        epilog=EPILOG,
        description="Send a model its named input tensors (an aimass.infer job; any model "
        "answers) and print its output tensors.",
    )
    infer.add_argument("--model", required=True, help="model name, e.g. diabetes")
    infer.add_argument("--version", type=int, help="pin a model version (default: newest)")
    infer.add_argument(
        "--input",
        dest="inputs",
        action="append",
        required=True,
        metavar="NAME=FILE.npy|JSON",
        help="one input tensor: a .npy file, or a JSON list such as [[1.5,2]] (float32 "
        "for decimals, int64 for integers); repeat for each input",
    )
    infer.add_argument(
        "--output",
        dest="outputs",
        action="append",
        metavar="NAME",
        help="an output to return (repeat; default: all)",
    )
    infer.add_argument("--save", type=Path, metavar="DIR", help="write each output as DIR/NAME.npy")
    _add_submit_options(infer)
    infer.set_defaults(handler=_guarded(run_infer))

    status = subparsers.add_parser(
        "status",
        help="print a job's status",
        epilog=EPILOG,
        description="queued, started, succeeded, failed, expired or unknown.",
    )
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_guarded(run_status))

    result = subparsers.add_parser(
        "result",
        help="print a job's result",
        epilog=EPILOG,
        description="Print a finished job's result, or its typed error.",
    )
    result.add_argument("job_id")
    result.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for it (default: do not wait)",
    )
    result.add_argument(
        "-o", "--output", type=Path, help="for a generate job, write its images as a PNG grid here"
    )
    result.add_argument("--json", action="store_true", help="print the stored result JSON")
    result.set_defaults(handler=_guarded(run_result))

    cancel = subparsers.add_parser(
        "cancel",
        help="cancel jobs that have not run",
        epilog=EPILOG,
        description="A queued job never runs; a job waiting in a worker's batch is dropped "
        "before the batch starts. Its status reads cancelled.",
    )
    cancel.add_argument("job_ids", nargs="+")
    cancel.set_defaults(handler=_guarded(run_cancel))

    dead_letters.register(subparsers)


def _add_submit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--priority",
        choices=["high", "normal", "low"],
        default="normal",
        help="queue priority (normal)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help="drop the job if no worker starts it within this long",
    )
    parser.add_argument("--job-id", help="choose the job id (a second submit runs nothing)")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and exit")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the result (60)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _guarded(handler: Handler) -> Handler:
    """Turn the errors a user can cause or meet into a message and an exit code."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        import redis

        from aimass.protocol.errors import AimassError, InvalidJob, JobTimeout

        try:
            return handler(args)
        except JobTimeout as exc:
            return _fail(exc, EXIT_NOT_FINISHED)
        except InvalidJob as exc:
            return _fail(exc, EXIT_USAGE)
        except AimassError as exc:
            return _fail(exc, EXIT_JOB_FAILED)
        except redis.RedisError as exc:
            print(
                f"error: Redis at $REDIS_URL failed ({type(exc).__name__}: {exc}); "
                "is it running, and is REDIS_URL right?",
                file=sys.stderr,
            )
            return EXIT_JOB_FAILED
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run


def _fail(exc: Exception, code: int) -> int:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    return code


@contextlib.contextmanager
def _explained_timeout(client: Any, model: str) -> Iterator[None]:
    """Add to a timeout the likeliest reason: no live worker serves the model."""
    from aimass.protocol.errors import JobTimeout

    try:
        yield
    except JobTimeout as exc:
        if model in _served_models(client.redis):
            raise
        raise JobTimeout(
            f"{exc}; no live worker serves model {model!r} (`aimass workers` lists the live ones)"
        ) from None


def _served_models(redis: Any) -> list[str]:
    """Models named in the live workers' heartbeats."""
    from aimass.protocol.heartbeats import live_heartbeats, served_models

    return served_models(live_heartbeats(redis))


def _client() -> Any:
    from aimass.producer.client import Client

    return Client.from_env()


def _submit_options(args: argparse.Namespace) -> dict[str, Any]:
    from aimass.protocol.contract import Priority

    return {"priority": Priority[args.priority], "deadline": args.deadline, "job_id": args.job_id}


def parse_features(text: str) -> list[float | int]:
    """``13.2,1.78,14`` -> [13.2, 1.78, 14]: integers stay integers (token ids), so the
    worker converts each to the model's datatype as it converts JSON data."""
    values: list[float | int] = []
    for part in text.split(","):
        word = part.strip()
        try:
            values.append(int(word) if word.lstrip("+-").isdigit() else float(word))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{word!r} in {text!r} is not a number; expected comma-separated numbers"
            ) from None
        if not math.isfinite(values[-1]):
            raise argparse.ArgumentTypeError(f"{word!r} in {text!r} is not a finite number")
    return values


def run_classify(args: argparse.Namespace) -> int:
    from aimass.producer.submission import Submission

    if bool(args.images) == bool(args.features):
        raise ValueError("give image files or --features vectors (one of them)")
    inputs: list[Any] = list(args.images) if args.images else list(args.features)
    groups = [inputs[i : i + IMAGES_PER_JOB] for i in range(0, len(inputs), IMAGES_PER_JOB)]
    if args.job_id and len(groups) > 1:
        raise ValueError(
            f"--job-id names one job, but {len(inputs)} inputs make "
            f"{len(groups)} jobs of up to {IMAGES_PER_JOB}; drop --job-id"
        )
    submissions = [
        Submission.classify(
            group, model=args.model, version=args.version, top_k=args.top_k, **_submit_options(args)
        )
        for group in groups
    ]
    with _client() as client, _explained_timeout(client, args.model):
        if args.no_wait:
            for job in client.submit_many(submissions):
                print(job.id)
            return EXIT_OK
        if len(submissions) == 1:
            results = [client.submit(submissions[0]).result(timeout=args.timeout)]
        else:
            results = client.run_many(submissions, timeout=args.timeout)
    if args.json:
        for result in results:
            print(json.dumps(result))
    else:
        predictions = [p for result in results for p in result["predictions"]]
        if args.images:
            print(classification_table([str(path) for path in args.images], predictions))
        else:
            vectors = [",".join(str(value) for value in vector) for vector in args.features]
            print(classification_table(vectors, predictions, "features"))
    return EXIT_OK


def classification_table(
    names: Sequence[str], predictions: Sequence[Any], what: str = "image"
) -> str:
    """One row per image (or feature vector): its best label and score, then the runners-up."""
    rows = [(what, "label", "score", "next")]
    for name, top in zip(names, predictions, strict=True):
        best = top[0]
        others = "  ".join(f"{p['label']} {p['score']:.3f}" for p in top[1:])
        rows.append((name, str(best["label"]), f"{best['score']:.3f}", others))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}".rstrip()
        for row in rows
    )


def run_generate(args: argparse.Namespace) -> int:
    if args.prompt is not None:
        with _client() as client, _explained_timeout(client, args.model):
            run_text(client, args, _submit_options(args))
        return EXIT_OK
    if not (args.output or args.json or args.no_wait):
        raise ValueError(
            "say where the images go: -o grid.png writes a PNG grid, "
            "--json prints them (base64 PNG)"
        )
    labels = [args.label] * args.count if args.label is not None else None
    with _client() as client, _explained_timeout(client, args.model):
        job = client.generate(
            model=args.model,
            version=args.version,
            count=args.count,
            labels=labels,
            seed=args.seed,
            **_submit_options(args),
        )
        if args.no_wait:
            print(job.id)
            return EXIT_OK
        stored = job.result(timeout=args.timeout, decode=False)
    if args.output:
        _write_grid(stored, args.output, args.columns, args.scale, quiet=args.json)
    if args.json:
        print(json.dumps(stored))
    return EXIT_OK


def _write_grid(
    stored: dict[str, Any],
    output: Path,
    columns: int | None,
    scale: int | None,
    quiet: bool = False,
) -> None:
    from aimass.producer.images import tile
    from aimass.producer.results import decode_image

    images = [decode_image(image) for image in stored["images"]]
    grid = tile(images, columns=columns, scale=scale)
    grid.save(output, format="PNG")
    if not quiet:
        labels = sorted(set(stored.get("labels", [])))
        shown = ", ".join(str(label) for label in labels[:10])
        print(
            f"wrote {output}: {len(images)} images ({grid.size[0]}x{grid.size[1]} px) "
            f"from {stored['model']} v{stored['version']}, labels {shown}, "
            f"seed {stored.get('seed')}"
        )


def read_tensor_inputs(specs: Sequence[str]) -> dict[str, Any]:
    """``NAME=FILE.npy`` or ``NAME=JSON`` arguments as ``{name: array or list}``."""
    import numpy as np

    inputs: dict[str, Any] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"--input {spec!r}: expected NAME=FILE.npy or NAME=[values]")
        if value.lstrip().startswith("["):
            try:
                inputs[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--input {name}: not a JSON list ({exc})") from None
        else:
            inputs[name] = np.load(value, allow_pickle=False)
    return inputs


def run_infer(args: argparse.Namespace) -> int:
    inputs = read_tensor_inputs(args.inputs)
    with _client() as client, _explained_timeout(client, args.model):
        job = client.infer(
            args.model,
            inputs,
            outputs=args.outputs,
            binary=not args.json,  # JSON lists when a script reads the result
            version=args.version,
            **_submit_options(args),
        )
        if args.no_wait:
            print(job.id)
            return EXIT_OK
        result = job.result(timeout=args.timeout)
    arrays = result.pop("arrays")
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            _save_npy(args.save / f"{name}.npy", array)
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    print(f"{result['model_name']} v{result['model_version']}")
    for output in result["outputs"]:
        array = arrays[output["name"]]
        print(f"{output['name']} {output['datatype']}{list(array.shape)}: {_preview(array)}")
    return EXIT_OK


def _save_npy(path: Path, array: Any) -> None:
    import numpy as np

    np.save(path, array, allow_pickle=False)


def _preview(array: Any, limit: int = 12) -> str:
    flat = array.reshape(-1)
    shown = " ".join(
        f"{value:.6g}" if array.dtype.kind == "f" else str(value) for value in flat[:limit]
    )
    return shown + (f" ... ({flat.size} values)" if flat.size > limit else "")


def run_status(args: argparse.Namespace) -> int:
    with _client() as client:
        status = client.job(args.job_id).status()
    print(json.dumps({"id": args.job_id, "status": str(status)}) if args.json else status)
    return EXIT_OK


def run_cancel(args: argparse.Namespace) -> int:
    from aimass.producer.results import JobStatus

    code = EXIT_OK
    with _client() as client:
        for job_id in args.job_ids:
            job = client.job(job_id)
            status = job.status()
            if status is JobStatus.unknown:
                print(
                    f"{job_id}: unknown job (never submitted, or its records have expired)",
                    file=sys.stderr,
                )
                code = EXIT_JOB_FAILED
            elif job.cancel():
                print(f"{job_id}: cancelled")
            else:
                print(f"{job_id}: not cancelled, it had finished ({job.status()})", file=sys.stderr)
                code = EXIT_JOB_FAILED
    return code


def run_result(args: argparse.Namespace) -> int:
    from aimass.producer.results import JobStatus

    with _client() as client:
        job = client.job(args.job_id)
        if args.wait <= 0 and job.status() is JobStatus.unknown:
            print(
                f"unknown job {args.job_id}: never submitted, or its records expired",
                file=sys.stderr,
            )
            return EXIT_JOB_FAILED
        stored = job.result(timeout=args.wait, decode=False)
    if args.output and "images" in stored:
        _write_grid(stored, args.output, None, None, quiet=args.json)
    if args.json:
        print(json.dumps(stored))
    elif "predictions" in stored:
        names = [f"#{i}" for i in range(len(stored["predictions"]))]
        print(classification_table(names, stored["predictions"]))
    elif "outputs" in stored:
        from aimass.protocol.tensors import array_from_document

        for output in stored["outputs"]:
            array = array_from_document(output)
            print(f"{output['name']} {output['datatype']}{list(array.shape)}: {_preview(array)}")
    elif not args.output:
        print(
            f"{len(stored['images'])} images from {stored['model']} v{stored['version']}, "
            f"labels {stored['labels']}, seed {stored['seed']}; -o grid.png writes them"
        )
    return EXIT_OK
