"""``aimass export zoo``, ``aimass export keras`` and ``aimass models``.

Imported to build ``aimass --help``: at module level only the standard library and
``producer``. TensorFlow, ONNX Runtime and the rest of ``export`` load inside the
handlers, when a command actually runs.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aimass.export.listing import add_models, add_repository, number, quality_text
from aimass.export.opsets import DEFAULT_OPSET
from aimass.export.zoo import ZOO as ZOO_MODELS
from aimass.protocol.manifest import ModelKind

if TYPE_CHECKING:
    from aimass.export.keras_import import KerasImportOptions
    from aimass.export.repository import PublishedModel


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``export`` (with ``zoo`` and ``keras``) and ``models`` to the ``aimass`` parser."""
    export = subparsers.add_parser(
        "export",
        help="train or load TensorFlow models, convert them to ONNX and publish them",
        description="Convert TensorFlow models to ONNX, check parity with ONNX Runtime, and "
        "publish them to the model repository.",
    )
    commands = export.add_subparsers(dest="export_command", required=True, metavar="{zoo,keras}")
    _add_zoo(commands)
    _add_keras(commands)

    add_models(subparsers)


def _add_zoo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    zoo = commands.add_parser(
        "zoo",
        help="train and publish the bundled models",
        description="Train digits and digits-gan on scikit-learn's digits, the tabular models on "
        "scikit-learn's wine and diabetes, charlm on Python's own standard library source, build "
        "AlexNet, convert, check parity and quality, and publish each as a new version.",
    )
    zoo.add_argument(
        "--only",
        metavar="NAMES",
        default=",".join(ZOO_MODELS),
        help=f"comma-separated subset of {','.join(ZOO_MODELS)} (default: all); digits-gan uses "
        "the digits trained in the same run, else the latest published one; digits-embed "
        "shares digits' training when both are asked for",
    )
    add_repository(zoo)
    zoo.add_argument(
        "--quick",
        action="store_true",
        help="train a few steps only (tests); quality gates not enforced",
    )
    zoo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for data order, initialisation and sampling (default 0)",
    )
    _add_opset(zoo)
    zoo.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="AlexNet weights (.weights.h5); default: random, trained=false",
    )
    zoo.add_argument(
        "--labels",
        type=Path,
        metavar="FILE",
        help="AlexNet labels, one per line (default class_0..class_999)",
    )
    zoo.add_argument(
        "--measure-batching",
        action="store_true",
        help="set AlexNet's max_batch_size from ONNX Runtime's throughput on this machine's CPU "
        "(default: 16, measured on an idle 2-core machine); needs an otherwise idle machine",
    )
    zoo.add_argument(
        "--skip-existing",
        action="store_true",
        help="publish only the models the repository has no version of yet",
    )
    zoo.set_defaults(handler=run_zoo)


def _add_opset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help=f"ONNX opset for tf2onnx, 13..18 (default {DEFAULT_OPSET})",
    )


def _add_keras(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keras = commands.add_parser(
        "keras",
        help="publish your own trained Keras model or SavedModel",
        description="Convert a .keras file or SavedModel folder to ONNX, check parity, "
        "and publish it.",
    )
    keras.add_argument(
        "path", type=Path, metavar="PATH", help="a .keras file or a SavedModel folder"
    )
    keras.add_argument(
        "--name", required=True, help="model name: lowercase letters, digits, '_', '.', '-'"
    )
    keras.add_argument("--kind", required=True, choices=[kind.value for kind in ModelKind])
    keras.add_argument(
        "--labels", type=Path, metavar="FILE", help="class labels, one per line (default class_<i>)"
    )
    add_repository(keras)
    _add_opset(keras)
    keras.add_argument(
        "--tolerance",
        type=float,
        help="allowed max abs error between TensorFlow and ONNX Runtime "
        "(default 1e-4 for classify and tensor, 1e-3 for generate and sequence)",
    )
    keras.add_argument("--seed", type=int, default=0, help="seed of the parity samples (default 0)")
    classify = keras.add_argument_group("classify")
    classify.add_argument("--height", type=int, help="input height, if the model leaves it open")
    classify.add_argument("--width", type=int, help="input width, if the model leaves it open")
    classify.add_argument(
        "--channels", type=int, help="input channels (1, 3 or 4), if the model leaves it open"
    )
    classify.add_argument(
        "--scale",
        type=float,
        default=1.0 / 255.0,
        help="input = pixel * scale + offset (default 1/255)",
    )
    classify.add_argument(
        "--offset",
        type=_floats,
        default=[0.0],
        metavar="X[,X...]",
        help="one offset, or one per channel (default 0)",
    )
    classify.add_argument(
        "--softmax", action="store_true", help="append a softmax to a model that outputs logits"
    )
    generate = keras.add_argument_group("generate")
    generate.add_argument(
        "--latent-size", type=int, help="latent vector size, if the model leaves it open"
    )
    generate.add_argument(
        "--class-count", type=int, help="number of classes the label input accepts (required)"
    )
    tensor = keras.add_argument_group("tensor (every input and output as it is)")
    tensor.add_argument(
        "--int-range",
        action="append",
        type=_int_range,
        default=[],
        metavar="NAME=LOW:HIGH",
        help="draw an integer input's parity samples from LOW..HIGH-1, e.g. an embedding's "
        "vocabulary (default 0:2; repeat per input)",
    )
    tensor.add_argument(
        "--sample",
        type=Path,
        metavar="FILE.npz",
        help="your own parity sample: one array per input, by input name",
    )
    tensor.add_argument(
        "--output-tolerance",
        action="append",
        type=_output_tolerance,
        default=[],
        metavar="NAME=TOL",
        help="one output's parity tolerance (default --tolerance, else 1e-4 for floats, "
        "0 for integers; repeat per output)",
    )
    _add_sequence(keras)
    batching = keras.add_argument_group("batching")
    batching.add_argument(
        "--max-batch-size", type=int, default=64, help="dynamic batching limit (default 64)"
    )
    batching.add_argument(
        "--max-queue-delay-ms", type=float, default=2.0, help="dynamic batching delay (default 2)"
    )
    keras.set_defaults(handler=run_keras)


def _add_sequence(keras: argparse.ArgumentParser) -> None:
    sequence = keras.add_argument_group(
        "sequence (one decoding step: token and state in, logits and new state out)"
    )
    sequence.add_argument(
        "--vocabulary",
        type=Path,
        metavar="FILE",
        help="each token id's text: a JSON list of strings, or one token per line (required)",
    )
    sequence.add_argument(
        "--token-input", metavar="NAME", help="the token input (default: the one integer input)"
    )
    sequence.add_argument(
        "--logits-output",
        metavar="NAME",
        help="the logits output (default: the one output as wide as the vocabulary)",
    )
    sequence.add_argument(
        "--state",
        action="append",
        type=_state_pair,
        default=[],
        metavar="INPUT:OUTPUT",
        help="a state input and the output that feeds it at the next step (default: paired "
        "by name, h_in:h_out, h:next_h, ...; repeat per state)",
    )
    for token, meaning in (
        ("start", "fed before each prompt"),
        ("end", "ends a sequence when sampled"),
        ("unknown", "stands for prompt text outside the vocabulary"),
    ):
        sequence.add_argument(
            f"--{token}-token", type=int, metavar="ID", help=f"the token id {meaning}"
        )
    sequence.add_argument(
        "--max-length",
        type=int,
        metavar="N",
        help="the most tokens a sequence may hold, if bounded",
    )
    sequence.add_argument(
        "--sample-prompt",
        default="",
        metavar="TEXT",
        help="write a sample from this prompt at export, into the manifest",
    )


def _state_pair(text: str) -> tuple[str, str]:
    source, _, target = text.partition(":")
    if not source or not target:
        raise argparse.ArgumentTypeError(f"expected INPUT:OUTPUT, got {text!r}")
    return source, target


def _int_range(text: str) -> tuple[str, tuple[int, int]]:
    name, _, bounds = text.partition("=")
    low, _, high = bounds.partition(":")
    try:
        parsed = (int(low), int(high))
    except ValueError:
        parsed = (0, 0)
    if not name or parsed[0] >= parsed[1]:
        raise argparse.ArgumentTypeError(f"expected NAME=LOW:HIGH with LOW < HIGH, got {text!r}")
    return name, parsed


def _output_tolerance(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        tolerance = float(value)
    except ValueError:
        tolerance = -1.0
    if not name or not tolerance >= 0:
        raise argparse.ArgumentTypeError(f"expected NAME=TOLERANCE (a number >= 0), got {text!r}")
    return name, tolerance


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _quietly(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command that trains or converts with TensorFlow's log lines hidden."""

    @functools.wraps(run)
    def quietly(args: argparse.Namespace) -> int:
        from aimass.export.quiet import quiet_tensorflow

        with quiet_tensorflow():
            return run(args)

    return quietly


@_quietly
def run_zoo(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ZOO_MODELS))
    if unknown or not names:
        return _fail(
            f"--only {args.only!r}: unknown model(s) {unknown}; "
            f"expected some of {','.join(ZOO_MODELS)}"
        )
    if (args.weights or args.labels) and "alexnet" not in names:
        return _fail("--weights and --labels apply to alexnet, which --only leaves out")
    from aimass.protocol.manifest import published_versions, resolve_repository

    repository = resolve_repository(args.repository)
    if args.skip_existing:
        names = [name for name in names if not published_versions(repository, name)]
        if not names:
            print(f"every requested model already has a version in {repository}")
            return 0
    from aimass.export.errors import ExportError
    from aimass.export.recipes import ZooOptions, publish_zoo

    options = ZooOptions(
        repository=repository,
        seed=args.seed,
        quick=args.quick,
        opset=args.opset,
        alexnet_weights=args.weights,
        alexnet_labels=args.labels,
        measure_batching=args.measure_batching,
    )
    started = time.perf_counter()
    try:
        published = publish_zoo(names, options, _progress)
    except ExportError as error:
        return _fail(str(error))
    for model in published:
        print(_summary(model))
    training = [
        model.manifest.model_dump().get("training", {}).get("seconds") for model in published
    ]
    trained = [seconds for seconds in training if isinstance(seconds, int | float) and seconds]
    print(f"done in {time.perf_counter() - started:.1f} s ({sum(trained):.1f} s of it training)")
    return 0


@_quietly
def run_keras(args: argparse.Namespace) -> int:
    from aimass.export.errors import ExportError
    from aimass.export.keras_import import KerasImportOptions, publish_user_model
    from aimass.protocol.manifest import resolve_repository

    options = KerasImportOptions(
        path=args.path,
        name=args.name,
        kind=ModelKind(args.kind),
        repository=resolve_repository(args.repository),
        labels=args.labels,
        opset=args.opset,
        tolerance=args.tolerance,
        height=args.height,
        width=args.width,
        channels=args.channels,
        scale=args.scale,
        offset=args.offset,
        softmax=args.softmax,
        latent_size=args.latent_size,
        class_count=args.class_count,
        int_ranges=dict(args.int_range),
        sample=args.sample,
        output_tolerances=dict(args.output_tolerance),
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        seed=args.seed,
    )
    try:
        if options.kind == ModelKind.sequence:
            published = _publish_sequence(args, options)
        else:
            published = publish_user_model(options, _progress)
    except ExportError as error:
        return _fail(str(error))
    print(_summary(published))
    return 0


def _publish_sequence(args: argparse.Namespace, options: KerasImportOptions) -> PublishedModel:
    from aimass.export.sequence_kind import SequenceOptions, publish_sequence_model

    sequence = SequenceOptions(
        vocabulary=args.vocabulary,
        token_input=args.token_input,
        logits_output=args.logits_output,
        states=args.state,
        start_token=args.start_token,
        end_token=args.end_token,
        unknown_token=args.unknown_token,
        max_length=args.max_length,
        sample_prompt=args.sample_prompt,
    )
    return publish_sequence_model(options, sequence, _progress)


def _summary(model: PublishedModel) -> str:
    manifest = model.manifest
    return (
        f"published {manifest.name} version {manifest.version} in {model.folder}: "
        f"{quality_text(manifest.quality, manifest.trained)}, parity max abs error "
        f"{number(manifest.parity_max_abs_error)} (tolerance {number(manifest.parity_tolerance)})"
    )


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"aimass: error: {message}", file=sys.stderr)
    return 1
