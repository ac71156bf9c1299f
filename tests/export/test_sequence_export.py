"""Sequence models exported as one decoding step: the zoo's charlm (trained a few steps,
``--quick``) and a user's own Keras step models through ``aimass export keras --kind
sequence``, each checked by the multi-step parity gate; step graphs that are not one
decoding step are refused with a typed error."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from aimass.export.errors import ParityError, StepGraphError
from aimass.export.keras_import import KerasImportOptions
from aimass.export.parity import check_step_parity
from aimass.export.sequence_kind import SequenceOptions, publish_sequence_model, read_vocabulary
from aimass.export.sequence_quality import StepRunner, encode_prompt, held_out_loss, write_sample
from aimass.export.sequence_recipes import HELD_OUT_STREAMS, QUICK_HELD_OUT_STEPS
from aimass.export.text import END_TOKEN, UNKNOWN_TOKEN, VOCABULARY, decode, load_text_split
from aimass.protocol.manifest import MODEL_FILE, Manifest, ModelKind, SequenceSpec
from tests.export.conftest import Aimass

pytestmark = pytest.mark.export

LSTM_VOCABULARY = [*"abcdefghij", "<unk>", "<end>"]


@pytest.fixture(scope="module")
def charlm(aimass: Aimass, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("zoo")
    code = aimass("export", "zoo", "--only", "charlm", "--quick", "--repository", str(repository))
    assert code == 0
    return repository / "charlm" / "1"


def sequence_of(folder: Path) -> tuple[Manifest, SequenceSpec]:
    manifest = Manifest.read(folder)
    assert manifest.sequence is not None
    return manifest, manifest.sequence


def test_charlm_sequence_manifest_names_its_step_graph(charlm: Path) -> None:
    manifest, spec = sequence_of(charlm)
    assert manifest.kind == ModelKind.sequence
    assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [
        ("token", "int64", [-1]),
        ("state", "float32", [-1, 256]),
    ]
    assert sorted((s.name, s.shape) for s in manifest.outputs) == [
        ("logits", [-1, len(VOCABULARY)]),
        ("next_state", [-1, 256]),
    ]
    assert spec.vocabulary == VOCABULARY and len(VOCABULARY) == 99
    assert (spec.token_input, spec.logits_output) == ("token", "logits")
    assert [(s.input, s.output, s.shape, s.dtype) for s in spec.state] == [
        ("state", "next_state", [256], "float32")
    ]
    assert spec.start_token == spec.end_token == END_TOKEN and spec.unknown_token == UNKNOWN_TOKEN
    assert manifest.parity_max_abs_error is not None and manifest.parity_max_abs_error <= 1e-3
    assert manifest.model_dump()["training"]["quick"] is True


def test_charlm_sequence_quality_is_measured_on_the_published_step_graph(charlm: Path) -> None:
    manifest, spec = sequence_of(charlm)
    quality = manifest.quality
    again = held_out_loss(
        charlm / MODEL_FILE,
        spec,
        load_text_split().held_out,
        HELD_OUT_STREAMS,
        QUICK_HELD_OUT_STEPS,
    )
    assert again["held_out_loss"] == pytest.approx(quality["held_out_loss"], rel=1e-6)
    assert quality["perplexity"] == pytest.approx(math.exp(quality["held_out_loss"]))
    assert quality["held_out_tokens"] == HELD_OUT_STREAMS * QUICK_HELD_OUT_STEPS
    # A few steps of training: better than guessing among 99 tokens, far from trained.
    assert 1.0 < quality["held_out_loss"] < math.log(len(VOCABULARY))
    assert quality["gate"] == {"max_held_out_loss": 2.0, "enforced": False}
    assert quality["held_out_files"] == [
        "calendar.py",
        "fractions.py",
        "queue.py",
        "shlex.py",
        "textwrap.py",
    ]


def test_charlm_sequence_sample_is_written_again_from_its_seed(charlm: Path) -> None:
    manifest, spec = sequence_of(charlm)
    assert spec.sample_prompt == "def "
    settings = manifest.quality["sample"]
    again = write_sample(
        charlm / MODEL_FILE,
        spec,
        spec.sample_prompt,
        settings["max_tokens"],
        settings["temperature"],
        settings["seed"],
    )
    assert again == spec.sample
    assert len(spec.sample) > 0 and set(spec.sample) <= set(VOCABULARY)


def test_charlm_sequence_sample_shows_in_models(
    aimass: Aimass, charlm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, spec = sequence_of(charlm)
    assert aimass("models", "--repository", str(charlm.parent.parent)) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("charlm "))
    assert "sequence" in row and "held_out_loss=" in row and "perplexity=" in row
    assert "charlm 1 wrote, from 'def ' (at export):" in out
    first_line = ("def " + spec.sample).expandtabs(4).splitlines()[0]
    assert f"    {first_line}" in out


def test_sequence_parity_gate_catches_a_state_that_drifts_at_a_later_step(charlm: Path) -> None:
    """The reference is the published graph itself, with a drift of 1e-2 added to its
    state from the 5th step: the first four steps agree, the 5th's state does not."""
    _, spec = sequence_of(charlm)
    runner = StepRunner(charlm / MODEL_FILE, spec)
    calls = []

    def drifting(feeds: Any) -> Any:
        calls.append(1)
        state = {"state": feeds["state"]}
        logits, new = runner.step(feeds["token"], state)
        drift = 1e-2 if len(calls) >= 5 else 0.0
        return {"logits": logits, "next_state": new["state"] + np.float32(drift)}

    tokens = np.arange(8 * 4, dtype=np.int64).reshape(8, 4) % len(VOCABULARY)
    steps = [{"token": row} for row in tokens]
    steps[0] |= runner.zero_state(4)
    carried = {"next_state": "state"}
    with pytest.raises(ParityError, match="'next_state' at step 5 of 8 differs"):
        check_step_parity("charlm", charlm / MODEL_FILE, drifting, steps, carried, 1e-3)
    calls.clear()
    assert check_step_parity("charlm", charlm / MODEL_FILE, drifting, steps[:4], carried, 0) == 0


def lstm_step(vocabulary: int = len(LSTM_VOCABULARY), state_out: int = 16) -> Any:
    """A user's step model: token id (batch,), h and c in; scores, h and c out."""
    keras.utils.set_random_seed(0)
    token = keras.Input((), dtype="int32", name="token_id")
    h_in = keras.Input((16,), name="h_in")
    c_in = keras.Input((16,), name="c_in")
    x = keras.layers.Embedding(vocabulary, 8)(token)
    out, (h, c) = keras.layers.LSTMCell(16, name="cell")(x, [h_in, c_in])
    if state_out != 16:
        h = keras.layers.Dense(state_out)(h)
    h_out = keras.layers.Identity(name="h_out")(h)
    c_out = keras.layers.Identity(name="c_out")(c)
    scores = keras.layers.Dense(vocabulary, name="scores")(out)
    return keras.Model([token, h_in, c_in], [scores, h_out, c_out])


def stateless_step() -> Any:
    """A state input with no output to feed it back."""
    keras.utils.set_random_seed(0)
    token = keras.Input((), dtype="int32", name="token_id")
    h_in = keras.Input((16,), name="h_in")
    x = keras.layers.Concatenate()([keras.layers.Embedding(12, 8)(token), h_in])
    return keras.Model([token, h_in], keras.layers.Dense(12, name="scores")(x))


def gru_saved_model(path: Path) -> Any:
    """A SavedModel step: its outputs are output_0 and output_1, its token (batch, 1)."""
    keras.utils.set_random_seed(1)
    token = keras.Input((1,), dtype="int64", name="last")
    memory = keras.Input((6,), name="memory")
    x = keras.layers.Flatten()(keras.layers.Embedding(5, 4)(token))
    out, new = keras.layers.GRUCell(6)(x, memory)
    model = keras.Model([token, memory], [keras.layers.Dense(5)(out), keras.layers.Identity()(new)])
    model.export(str(path), verbose=False)
    return model


@pytest.fixture(scope="module")
def user_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sequence-models")
    paths = {
        "lstm": folder / "lstm.keras",
        "narrow": folder / "narrow.keras",
        "stateless": folder / "stateless.keras",
        "json": folder / "vocabulary.json",
        "lines": folder / "vocabulary.txt",
        "saved": folder / "saved",
    }
    lstm_step().save(paths["lstm"])
    lstm_step(state_out=8).save(paths["narrow"])
    stateless_step().save(paths["stateless"])
    paths["json"].write_text(json.dumps(LSTM_VOCABULARY))
    paths["lines"].write_text("x\ny\nz\n<unk>\n<end>\n")
    gru_saved_model(paths["saved"])
    return paths


def test_users_keras_sequence_step_is_published_with_its_states(
    aimass: Aimass, user_models: dict[str, Path], tmp_path: Path
) -> None:
    code = aimass(
        "export",
        "keras",
        str(user_models["lstm"]),
        "--name",
        "letters",
        "--kind",
        "sequence",
        "--vocabulary",
        str(user_models["json"]),
        "--start-token",
        "11",
        "--end-token",
        "11",
        "--unknown-token",
        "10",
        "--sample-prompt",
        "abc",
        "--max-batch-size",
        "32",
        "--repository",
        str(tmp_path),
    )
    assert code == 0
    folder = tmp_path / "letters" / "1"
    manifest, spec = sequence_of(folder)
    assert manifest.kind == ModelKind.sequence
    assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [
        ("token", "int64", [-1]),
        ("h_in", "float32", [-1, 16]),
        ("c_in", "float32", [-1, 16]),
    ]
    # Paired by their names, h_in with h_out and c_in with c_out; the logits found by width.
    assert [(s.input, s.output, s.shape) for s in spec.state] == [
        ("h_in", "h_out", [16]),
        ("c_in", "c_out", [16]),
    ]
    assert spec.vocabulary == LSTM_VOCABULARY
    assert (spec.start_token, spec.end_token, spec.unknown_token) == (11, 11, 10)
    assert spec.sample_prompt == "abc" and set(spec.sample) <= set("abcdefghij<unk>")
    assert manifest.batching.max_batch_size == 32
    assert manifest.model_dump()["origin"]["names"]["logits"] == "scores"
    assert manifest.parity_max_abs_error is not None and manifest.parity_max_abs_error <= 1e-3
    assert_decodes_like_keras(lstm_step(), folder, spec)


def assert_decodes_like_keras(model: Any, folder: Path, spec: SequenceSpec) -> None:
    """Three steps in a row of the published graph against the Keras model's own."""
    runner = StepRunner(folder / MODEL_FILE, spec)
    state = runner.zero_state(2)
    h = c = np.zeros((2, 16), np.float32)
    for token in ([1, 2], [3, 4], [11, 0]):
        logits, state = runner.step(np.array(token), state)
        scores, h, c = (np.asarray(t) for t in model([np.array(token, np.int32), h, c]))
        np.testing.assert_allclose(logits, scores, atol=1e-5)
        np.testing.assert_allclose(state["h_in"], h, atol=1e-5)


def test_saved_model_sequence_step_with_named_flags(
    aimass: Aimass, user_models: dict[str, Path], tmp_path: Path
) -> None:
    code = aimass(
        "export",
        "keras",
        str(user_models["saved"]),
        "--name",
        "xyz",
        "--kind",
        "sequence",
        "--vocabulary",
        str(user_models["lines"]),
        "--token-input",
        "last",
        "--logits-output",
        "output_0",
        "--state",
        "memory:output_1",
        "--end-token",
        "4",
        "--repository",
        str(tmp_path),
    )
    assert code == 0
    manifest, spec = sequence_of(tmp_path / "xyz" / "1")
    assert spec.vocabulary == ["x", "y", "z", "<unk>", "<end>"]
    assert [(s.input, s.output, s.shape) for s in spec.state] == [("memory", "output_1", [6])]
    assert spec.sample == ""  # no prompt and no start token: nothing to start a sample from
    assert manifest.model_dump()["origin"]["format"] == "saved_model"


SEQUENCE_REFUSALS = [
    ("narrow", "json", [], "the state input 'h_in' float32 (batch, 16) and its output 'h_out'"),
    ("narrow", "json", [], "must have the shape and dtype of the input it feeds"),
    ("stateless", "json", [], "cannot tell which output of"),
    ("stateless", "json", [], "Expected one state output per state input"),
    ("lstm", "lines", [], "expects one float logits output (batch, 5)"),
    ("lstm", None, [], "--kind sequence needs --vocabulary FILE"),
    ("lstm", "json", ["--end-token", "12"], "--end-token 12 is outside the vocabulary"),
    ("lstm", "json", ["--state", "h_in:nope"], "has no output 'nope'; its outputs are"),
    ("lstm", "json", ["--token-input", "h_in"], "the token input 'h_in' float32 (batch, 16)"),
    (
        "lstm",
        "json",
        ["--state", "h_in:h_out"],
        "input 'c_in' float32 (batch, 16) is neither the token nor a state; output 'c_out'",
    ),
]


@pytest.mark.parametrize(("model", "vocabulary", "flags", "expected"), SEQUENCE_REFUSALS)
def test_wrong_sequence_step_graphs_are_refused(
    aimass: Aimass,
    user_models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: str,
    vocabulary: str | None,
    flags: list[str],
    expected: str,
) -> None:
    chosen = ["--vocabulary", str(user_models[vocabulary])] if vocabulary else []
    code = aimass(
        "export",
        "keras",
        str(user_models[model]),
        "--name",
        "wrong",
        "--kind",
        "sequence",
        "--repository",
        str(tmp_path),
        *chosen,
        *flags,
    )
    assert code == 1
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "wrong").exists()


def test_wrong_sequence_step_graph_is_a_typed_error(
    user_models: dict[str, Path], tmp_path: Path
) -> None:
    common = KerasImportOptions(
        path=user_models["narrow"], name="narrow", kind=ModelKind.sequence, repository=tmp_path
    )
    with pytest.raises(StepGraphError, match="differ"):
        publish_sequence_model(common, SequenceOptions(vocabulary=user_models["json"]), print)
    assert list(tmp_path.iterdir()) == []


def test_sequence_step_that_misses_the_parity_tolerance_is_not_published(
    aimass: Aimass, user_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = aimass(
        "export",
        "keras",
        str(user_models["lstm"]),
        "--name",
        "strict",
        "--kind",
        "sequence",
        "--vocabulary",
        str(user_models["json"]),
        "--tolerance",
        "1e-12",
        "--repository",
        str(tmp_path),
    )
    assert code == 1
    assert "parity check failed for model 'strict'" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()


def test_sequence_vocabulary_files_and_prompts(tmp_path: Path) -> None:
    lines = tmp_path / "v.txt"
    lines.write_text("a\r\nbc\n\n")
    assert read_vocabulary(lines) == ["a", "bc", ""]
    listed = tmp_path / "v.json"
    listed.write_text(json.dumps(["\n", "ab", "a", "b"]))
    assert read_vocabulary(listed) == ["\n", "ab", "a", "b"]
    spec = SequenceSpec(vocabulary=read_vocabulary(listed), state=[], unknown_token=3)
    assert encode_prompt("aab\n?", spec) == [2, 1, 0, 3]  # longest match first; ? unknown
    assert decode([40, 37, 38, 0, UNKNOWN_TOKEN, END_TOKEN]) == "HEF \ufffd"
