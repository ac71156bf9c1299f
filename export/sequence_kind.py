"""The sequence kind: a user's own Keras or SavedModel decoding step, published for
``aimass.sequence`` jobs.

The model is one step: an integer token input, (batch,) or (batch, 1), and state
inputs in; a float logits output (batch, vocabulary) and one state output per state
input, of the same shape and dtype, out. Which tensor is which is read from the
options, or inferred where the names make it plain (the one integer input is the
token; the one output as wide as the vocabulary is the logits; ``h_in``/``h``/``prev_h``
pairs with ``h_out``/``next_h``/``new_h``; one state input and one state output pair
with each other). The published graph's token and logits are ``token`` and ``logits``;
the states keep the model's names, made safe for ONNX, and the manifest lists them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from aimass.export.errors import StepGraphError, UnsupportedModelError
from aimass.export.keras_import import KerasImportOptions
from aimass.export.model_files import ImportedModel, ModelTensor, load_model
from aimass.export.parity import SEQUENCE_TOLERANCE
from aimass.export.publish import publish
from aimass.export.repository import Progress, PublishedModel, check_model_name
from aimass.export.sequence_quality import write_sample
from aimass.export.sequence_step import (
    LOGITS,
    PARITY_STEPS,
    PARITY_STREAMS,
    TOKEN,
    Step,
    StepSignature,
    convert_step_checked,
    step_function,
)
from aimass.export.tensor_kind import graph_names
from aimass.protocol.manifest import BatchingSpec, SequenceSpec, SequenceState

SAMPLE_TOKENS = 120
SAMPLE_TEMPERATURE = 1.0
_INPUT_MARKS = re.compile(r"^(in|input|prev|previous|old)_|_(in|input|prev|previous|tm1)$")
_OUTPUT_MARKS = re.compile(r"^(out|output|next|new)_|_(out|output|next|new)$")


@dataclass(frozen=True)
class SequenceOptions:
    """``--kind sequence``'s own options (the rest are ``KerasImportOptions``)."""

    vocabulary: Path | None = None  # JSON list of token texts, or one token per line
    token_input: str | None = None  # None: the one integer input
    logits_output: str | None = None  # None: the one output as wide as the vocabulary
    states: Sequence[tuple[str, str]] = field(default_factory=list)  # (input, output) names
    start_token: int | None = None
    end_token: int | None = None
    unknown_token: int | None = None
    max_length: int | None = None
    sample_prompt: str = ""


@dataclass(frozen=True)
class StepGraph:
    """Which of the model's tensors is the token, the logits, and each state pair."""

    token: ModelTensor
    logits: ModelTensor
    states: list[tuple[ModelTensor, ModelTensor]]


def publish_sequence_model(
    common: KerasImportOptions, options: SequenceOptions, progress: Progress
) -> PublishedModel:
    """Load, check, convert (multi-step parity gate) and publish a user's step model."""
    check_model_name(common.name)
    if options.vocabulary is None:
        raise UnsupportedModelError(
            "--kind sequence needs --vocabulary FILE: the text of each token id (a JSON list "
            "of strings, or one token per line)"
        )
    vocabulary = read_vocabulary(options.vocabulary)
    _check_token_ids(options, len(vocabulary))
    model = load_model(common.path)
    progress(
        f"{common.name}: loaded {common.path} ({model.format}), inputs {model.describe_inputs()}"
    )
    graph = find_step_graph(model, options, len(vocabulary))
    signature = _signature(graph)
    function = step_function(_model_step(model, graph), signature)
    rng = np.random.default_rng(common.seed)
    tokens = rng.integers(0, len(vocabulary), (PARITY_STEPS, PARITY_STREAMS), dtype=np.int64)
    tolerance = SEQUENCE_TOLERANCE if common.tolerance is None else common.tolerance
    candidate = convert_step_checked(
        common.name, function, signature, tokens, tolerance, common.opset, progress
    )
    spec = SequenceSpec(
        vocabulary=vocabulary,
        token_input=signature.token,
        logits_output=signature.logits,
        state=list(signature.states),
        start_token=options.start_token,
        end_token=options.end_token,
        unknown_token=options.unknown_token,
        max_length=options.max_length,
        sample_prompt=options.sample_prompt,
    )
    if options.sample_prompt or options.start_token is not None:
        sample = write_sample(
            candidate.model_bytes,
            spec,
            options.sample_prompt,
            SAMPLE_TOKENS,
            SAMPLE_TEMPERATURE,
            common.seed,
        )
        progress(f"{common.name}: sample from {options.sample_prompt!r}: {sample!r}")
        spec = spec.model_copy(update={"sample": sample})
    names = {TOKEN: graph.token.name, LOGITS: graph.logits.name}
    for state, (source, target) in zip(spec.state, graph.states, strict=True):
        names |= {state.input: source.name, state.output: target.name}
    fields: dict[str, Any] = {
        "sequence": spec,
        "quality": {},  # no held-out text comes with a user's model
        "batching": BatchingSpec(
            max_batch_size=common.max_batch_size, max_queue_delay_ms=common.max_queue_delay_ms
        ),
        "origin": {"path": str(model.path), "format": model.format, "names": names},
    }
    return publish(common.repository, candidate, fields)


def read_vocabulary(path: Path) -> list[str]:
    """Each token id's text: a JSON list of strings, else one token per line (ids from 0;
    a JSON list is the way to give tokens that hold a newline)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UnsupportedModelError(
            f"could not read --vocabulary {path}: {error}; expected a UTF-8 text file"
        ) from error
    if text.lstrip().startswith("["):
        try:
            tokens = json.loads(text)
        except json.JSONDecodeError as error:
            raise UnsupportedModelError(
                f"--vocabulary {path} starts like a JSON list but is not one ({error})"
            ) from error
        if not all(isinstance(token, str) for token in tokens):
            raise UnsupportedModelError(
                f"--vocabulary {path} is a JSON list of other things than strings; expected "
                'the text of each token id, e.g. ["a", "b", "\\n"]'
            )
    else:
        tokens = [line.removesuffix("\r") for line in text.split("\n")]
        if tokens and tokens[-1] == "":
            tokens.pop()  # the file's last newline ends a line; it is no token
    if not tokens:
        raise UnsupportedModelError(f"--vocabulary {path} holds no tokens")
    return list(tokens)


def find_step_graph(model: ImportedModel, options: SequenceOptions, vocabulary: int) -> StepGraph:
    """The model's token input, logits output and state pairs; StepGraphError if the model
    is not one decoding step."""
    inputs = {tensor.name: tensor for tensor in model.inputs}
    outputs = {tensor.name: tensor for tensor in model.outputs}
    named = [
        (_named(inputs, i, "input", model), _named(outputs, o, "output", model))
        for i, o in options.states
    ]
    token = (
        _named(inputs, options.token_input, "input", model)
        if options.token_input
        else _only_integer_input(model)
    )
    taken_outputs = {target.name for _, target in named}
    logits = (
        _named(outputs, options.logits_output, "output", model)
        if options.logits_output
        else _logits_output(model, vocabulary, taken_outputs)
    )
    _check_token_and_logits(token, logits, vocabulary)
    states = named or _pair_states(
        [t for t in model.inputs if t.name != token.name],
        [t for t in model.outputs if t.name != logits.name],
        model,
    )
    graph = StepGraph(token, logits, states)
    _check_every_tensor_used(graph, model)
    for source, target in states:
        _check_state_pair(source, target)
    return graph


def _named(
    tensors: dict[str, ModelTensor], name: str, what: str, model: ImportedModel
) -> ModelTensor:
    found = tensors.get(name)
    if found is None:
        raise StepGraphError(
            f"{model.path} has no {what} '{name}'; its {what}s are {', '.join(tensors) or 'none'}"
        )
    return found


def _only_integer_input(model: ImportedModel) -> ModelTensor:
    integers = [tensor for tensor in model.inputs if tensor.dtype.is_integer]
    if len(integers) != 1:
        raise StepGraphError(
            f"--kind sequence expects one integer token input (batch,) or (batch, 1); "
            f"{model.path} has {len(integers)} integer inputs among {model.describe_inputs()}: "
            "pass --token-input NAME"
        )
    return integers[0]


def _logits_output(model: ImportedModel, vocabulary: int, taken: set[str]) -> ModelTensor:
    wide = [
        tensor
        for tensor in model.outputs
        if tensor.name not in taken
        and tensor.dtype.is_floating
        and len(tensor.shape) == 2
        and tensor.shape[1] in (vocabulary, None)
    ]
    if len(wide) > 1:
        wide = [tensor for tensor in wide if "logit" in tensor.name.lower()] or wide
    if len(wide) != 1:
        raise StepGraphError(
            f"--kind sequence expects one float logits output (batch, {vocabulary}), as wide "
            f"as the vocabulary; {model.path} has {len(wide)} such outputs among "
            f"{model.describe_outputs()}: pass --logits-output NAME, or check --vocabulary"
        )
    return wide[0]


def _pair_states(
    inputs: list[ModelTensor], outputs: list[ModelTensor], model: ImportedModel
) -> list[tuple[ModelTensor, ModelTensor]]:
    """Each state input with the output that gives it for the next step, by name."""
    if len(inputs) == 1 and len(outputs) == 1:
        return [(inputs[0], outputs[0])]
    by_stem = {_OUTPUT_MARKS.sub("", tensor.name.lower()): tensor for tensor in outputs}
    pairs = []
    for tensor in inputs:
        stem = _INPUT_MARKS.sub("", tensor.name.lower())
        match = by_stem.pop(stem, None)
        if match is None:
            break
        pairs.append((tensor, match))
    if len(pairs) != len(inputs) or by_stem:
        raise StepGraphError(
            f"cannot tell which output of {model.path} gives which state input for the next "
            f"step: state inputs {', '.join(str(t) for t in inputs) or 'none'}; outputs "
            f"{', '.join(str(t) for t in outputs) or 'none'}. Expected one state output per "
            "state input: pass --state INPUT:OUTPUT for each"
        )
    return pairs


def _check_token_and_logits(token: ModelTensor, logits: ModelTensor, vocabulary: int) -> None:
    if not token.dtype.is_integer or token.shape[1:] not in ((), (1,)):
        raise StepGraphError(
            f"the token input {token} is not one integer per sequence: expected (batch,) or "
            "(batch, 1) integers, the last token of each sequence"
        )
    if not logits.dtype.is_floating or len(logits.shape) != 2:
        raise StepGraphError(
            f"the logits output {logits} is not (batch, vocabulary) floats: expected one "
            "score per token of the vocabulary"
        )
    if logits.shape[1] not in (vocabulary, None):
        raise StepGraphError(
            f"the logits output {logits} has {logits.shape[1]} scores, but the vocabulary "
            f"has {vocabulary} tokens: expected one score per token id"
        )


def _check_every_tensor_used(graph: StepGraph, model: ImportedModel) -> None:
    paired = {graph.token.name} | {source.name for source, _ in graph.states}
    unused = [str(t) for t in model.inputs if t.name not in paired]
    given = {graph.logits.name} | {target.name for _, target in graph.states}
    extra = [str(t) for t in model.outputs if t.name not in given]
    if unused or extra:
        raise StepGraphError(
            f"{model.path} is not one decoding step: "
            + "; ".join(
                [f"input {name} is neither the token nor a state" for name in unused]
                + [f"output {name} is neither the logits nor a state" for name in extra]
            )
            + ". Expected each state input to have an output of the same shape that feeds it "
            "at the next step (--state INPUT:OUTPUT)"
        )


def _check_state_pair(source: ModelTensor, target: ModelTensor) -> None:
    if source.shape[1:] != target.shape[1:] or source.dtype != target.dtype:
        raise StepGraphError(
            f"the state input {source} and its output {target} differ: a state output must "
            "have the shape and dtype of the input it feeds at the next step"
        )
    if not source.dtype.is_floating or len(source.shape) < 2 or None in source.shape[1:]:
        raise StepGraphError(
            f"the state input {source} is not (batch, sizes...) floats of fixed sizes: a "
            "worker keeps each sequence's state, starting from zeros, at one fixed shape"
        )


def _signature(graph: StepGraph) -> StepSignature:
    sources = [source.name for source, _ in graph.states]
    targets = [target.name for _, target in graph.states]
    names = graph_names([TOKEN, LOGITS, *sources, *targets])[2:]
    count = len(graph.states)
    return StepSignature(
        tuple(
            SequenceState(
                input=names[index],
                output=names[count + index],
                shape=[int(dim) for dim in source.shape[1:] if dim is not None],
                dtype=source.dtype.name,
            )
            for index, (source, _) in enumerate(graph.states)
        )
    )


def _model_step(model: ImportedModel, graph: StepGraph) -> Step:
    """The step in the model's own terms: the token cast and shaped as it takes it."""
    token = graph.token
    position = {tensor.name: index for index, tensor in enumerate(model.inputs)}
    names = [tensor.name for tensor in model.outputs]

    def step(tokens: tf.Tensor, states: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        given = tf.reshape(tf.cast(tokens, token.dtype), (-1, *token.shape[1:]))
        feeds: list[tf.Tensor | None] = [None] * len(model.inputs)
        feeds[position[token.name]] = given
        for (source, _), state in zip(graph.states, states, strict=True):
            feeds[position[source.name]] = state
        results = dict(zip(names, model.call_all(feeds), strict=True))
        return results[graph.logits.name], [results[target.name] for _, target in graph.states]

    return step


def _check_token_ids(options: SequenceOptions, vocabulary: int) -> None:
    for flag, token in (
        ("--start-token", options.start_token),
        ("--end-token", options.end_token),
        ("--unknown-token", options.unknown_token),
    ):
        if token is not None and not 0 <= token < vocabulary:
            raise UnsupportedModelError(
                f"{flag} {token} is outside the vocabulary: expected a token id 0..{vocabulary - 1}"
            )
