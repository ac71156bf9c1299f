"""Sampling and stop strings of sequence jobs: pure pieces, no server."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from aimass.worker.sampling import Sampler, sample_one, sample_rows
from aimass.worker.stops import StopText
from tests.support.sequence_model import VOCABULARY, step_model


def logits_of(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, (rows, 50)).astype(np.float32)


def test_sequence_greedy_takes_the_likeliest_token() -> None:
    logits = logits_of(6)
    picked = sample_rows(logits, [Sampler(0.0) for _ in range(6)])
    assert picked.tolist() == np.argmax(logits, axis=1).tolist()


def test_sequence_a_step_of_many_samples_as_each_alone() -> None:
    logits = logits_of(12)
    settings = [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.0, 0, 1.0)] * 3
    together = [Sampler(t, k, p, seed) for seed, (t, k, p) in enumerate(settings)]
    alone = [Sampler(t, k, p, seed) for seed, (t, k, p) in enumerate(settings)]
    for _ in range(20):  # the same draws step after step, not only the first
        batch = sample_rows(logits, together).tolist()
        singles = [sample_one(logits[i], alone[i]) for i in range(12)]
        assert batch == singles


def test_sequence_the_same_seed_draws_the_same_tokens_and_another_does_not() -> None:
    logits = logits_of(1)[0]
    first = [sample_one(logits, s) for s in [Sampler(1.0, seed=5)] for _ in range(50)]
    again = [sample_one(logits, s) for s in [Sampler(1.0, seed=5)] for _ in range(50)]
    other = [sample_one(logits, s) for s in [Sampler(1.0, seed=6)] for _ in range(50)]
    assert first == again and first != other


def test_sequence_draws_made_ahead_are_the_generators_own_one_at_a_time() -> None:
    sampler, alone = Sampler(seed=11), np.random.default_rng(11)
    assert [sampler.draw() for _ in range(200)] == [alone.random() for _ in range(200)]


def test_sequence_sampling_follows_the_softmax_and_the_cuts() -> None:
    logits = np.log(np.array([1, 3, 0, 0], dtype=np.float64) + 1e-12).astype(np.float32)
    sampler = Sampler(1.0, seed=1)
    draws = [sample_one(logits, sampler) for _ in range(4000)]
    assert set(draws) == {0, 1}
    assert abs(draws.count(1) / 4000 - 0.75) < 0.03
    row = logits_of(1)[0]
    assert {sample_one(row, Sampler(1.0, top_k=1, seed=s)) for s in range(20)} == {
        int(np.argmax(row))
    }
    assert {sample_one(row, Sampler(2.0, top_p=1e-6, seed=s)) for s in range(20)} == {
        int(np.argmax(row))
    }
    top3 = set(np.argsort(-row)[:3].tolist())
    assert {sample_one(row, Sampler(5.0, top_k=3, seed=s)) for s in range(200)} == top3


def test_sequence_logits_at_batch_1_and_32_pick_the_same_tokens() -> None:
    """ONNX Runtime's batched math must not change what a sequence writes."""
    session = ort.InferenceSession(step_model(hidden=64))
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, len(VOCABULARY), 32)
    states = rng.uniform(-1, 1, (32, 64)).astype(np.float32)
    batched = session.run(None, {"token": tokens, "state": states})[0]
    alone = np.concatenate(
        [
            session.run(None, {"token": tokens[i : i + 1], "state": states[i : i + 1]})[0]
            for i in range(32)
        ]
    )
    assert np.abs(batched - alone).max() < 1e-4
    for temperature in (0.0, 0.8, 1.0):
        mates = [Sampler(temperature, seed=i) for i in range(32)]
        single = [Sampler(temperature, seed=i) for i in range(32)]
        for _ in range(10):
            assert sample_rows(batched, mates).tolist() == [
                sample_one(alone[i], single[i]) for i in range(32)
            ]


def test_sequence_stop_strings_split_across_tokens_never_get_out() -> None:
    text = StopText(["END", "stop!"])
    out = [text.add(piece) for piece in ["a", "b", "E", "N", "x", "s", "t", "o", "p", "!"]]
    assert "".join(out) == "abENx"
    assert text.stopped
    assert out[2] == "" and out[3] == ""  # held while they could still start "END"


def test_sequence_the_earliest_stop_wins_and_held_text_comes_out_at_the_end() -> None:
    text = StopText(["cd", "bcde"])
    assert text.add("ab") == "a"  # "b" may start "bcde"
    assert text.add("cd") == "b"  # "cd" appears first
    assert text.stopped
    held = StopText(["xyz"])
    assert held.add("axy") == "a"
    assert held.flush() == "xy" and not held.stopped
    assert StopText([]).add("anything") == "anything"
