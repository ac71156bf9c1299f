"""The decoding loop (worker/decoding.py) driven without a server: the step model's own
math in numpy as its runner, jobs submitted directly."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import numpy as np
import pytest
import redis

from aimass.protocol.contract import SequenceJob
from aimass.protocol.errors import InvalidInput, JobCancelled, ModelError
from aimass.protocol.manifest import Manifest
from aimass.worker.cancels import CancelledJobs
from aimass.worker.decoding import Decoder
from aimass.worker.kinds import Limits
from aimass.worker.sequences import Decoding, SequenceModel
from tests.support.sequence_model import publish_sequence_model, reference_greedy, step, weights

LIMITS = Limits(1 << 20, 1 << 20)


class NumpyStep:
    """The Elman step of tests/support/sequence_model.py, in numpy; records each run's
    batch size (and can be slowed down, so that a test can act between steps)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.w = weights(64)
        self.sizes: list[int] = []
        self.started: list[float] = []  # when each run began
        self.delay_s = delay_s

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.sizes.append(len(feeds["token"]))
        self.started.append(time.monotonic())
        if self.delay_s:
            time.sleep(self.delay_s)
        state, logits = step(self.w, feeds["token"], feeds["state"])
        return [logits, state]


@pytest.fixture(scope="module")
def logic(tmp_path_factory: pytest.TempPathFactory) -> SequenceModel:
    folder = publish_sequence_model(tmp_path_factory.mktemp("models"))
    return SequenceModel(Manifest.read(folder))


@pytest.fixture
def decoders() -> Iterator[list[Decoder]]:
    made: list[Decoder] = []
    yield made
    for decoder in made:
        decoder.stop(5)


def start(logic: SequenceModel, made: list[Decoder], runner: NumpyStep, **options) -> Decoder:
    # The worker's own cancelled ids by default (their count of cancels heard lets the
    # loop step on without a look between steps: worker/decoding.py).
    options.setdefault("cancelled", heard_cancels())
    decoder = Decoder("tiny-rnn", runner, logic, ["logits", "next_state"], **options)
    made.append(decoder)
    return decoder


def heard_cancels(limit: int = 1000) -> CancelledJobs:
    return CancelledJobs(redis.Redis(), limit=limit)  # (its listener is not started)


def submit(decoder: Decoder, logic: SequenceModel, prompt: str, job_id: str, **job) -> Decoding:
    _, _, decoding = logic.prepare(
        SequenceJob(model="tiny-rnn", prompt=prompt, **job), LIMITS, job_id
    )
    decoder.submit(decoding, time.monotonic())
    return decoding


def decoding_long(decoder: Decoder, logic: SequenceModel, max_tokens: int) -> Decoding:
    """A greedy sequence of ``max_tokens``, once it has written a few."""
    long = submit(decoder, logic, "def ", "long", max_tokens=max_tokens, temperature=0)
    while long.tokens < 5:
        time.sleep(0.001)
    return long


def test_sequence_a_short_job_joins_a_long_one_and_leaves_first(logic, decoders) -> None:
    runner = NumpyStep(delay_s=0.001)
    decoder = start(logic, decoders, runner)
    long = decoding_long(decoder, logic, 400)
    short = submit(decoder, logic, "class A:", "short", max_tokens=3, temperature=0)
    short.future.result(10)
    assert not long.future.done()  # it went on decoding after its mate left
    long.future.result(10)
    assert long.text == reference_greedy("def ", 400)
    assert short.text == reference_greedy("class A:", 3)
    assert 2 in runner.sizes and runner.sizes[-1] == 1  # joined, then left
    # Its first token came from the end of its prompt, before any step of both.
    assert short.first_token_at < runner.started[runner.sizes.index(2)]


def test_sequence_start_is_on_record_before_its_first_step_and_others_step_meanwhile(
    logic, decoders
) -> None:
    counted: dict[str, float] = {}

    def slow_record(ids: list[str]) -> None:  # a Redis far away
        time.sleep(0.05)
        counted.update(dict.fromkeys(ids, time.monotonic()))

    runner = NumpyStep(delay_s=0.001)
    decoder = start(logic, decoders, runner, on_start=slow_record)
    long = decoding_long(decoder, logic, 2000)
    asked = time.monotonic()
    late = [submit(decoder, logic, f"{i}:", f"late{i}", max_tokens=5, seed=i) for i in range(3)]
    for job in late:
        job.future.result(10)
    for job in [long, *late]:
        assert job.job_id in counted and counted[job.job_id] <= job.joined  # before its steps
    during = [t for t in runner.started if asked < t < min(counted[j.job_id] for j in late)]
    assert len(during) >= 10  # the long one went on stepping while they were counted
    long.future.result(10)


def test_sequence_steps_hold_at_most_the_limit_and_one_at_a_time_when_off(logic, decoders) -> None:
    batched, naive = NumpyStep(), NumpyStep()
    for runner, options in ((batched, {"max_sequences": 4}), (naive, {"batching": False})):
        decoder = start(logic, decoders, runner, **options)
        jobs = [submit(decoder, logic, f"{i}:", f"j{i}", max_tokens=30, seed=i) for i in range(10)]
        for job in jobs:
            job.future.result(10)
    assert max(batched.sizes) == 4 and min(batched.sizes) >= 1
    assert set(naive.sizes) == {1}
    assert len(naive.sizes) > len(batched.sizes)


def test_sequence_buckets_pad_each_step_to_a_fixed_size(logic, decoders) -> None:
    runner = NumpyStep()
    decoder = start(logic, decoders, runner, max_sequences=8, buckets=(1, 2, 4, 8))
    jobs = [submit(decoder, logic, f"{i}!", f"b{i}", max_tokens=20 + i, seed=i) for i in range(5)]
    alone = start(logic, decoders, NumpyStep())
    again = [submit(alone, logic, f"{i}!", f"c{i}", max_tokens=20 + i, seed=i) for i in range(5)]
    for job in jobs + again:
        job.future.result(10)
    assert set(runner.sizes) <= {1, 2, 4, 8} and 8 in runner.sizes
    assert [j.text for j in jobs] == [j.text for j in again]  # padding changes no text


@pytest.mark.parametrize("cancels", ["a plain set", "the worker's"])
def test_sequence_cancel_and_time_limit_end_a_sequence_between_steps(
    logic, decoders, cancels
) -> None:
    cancelled = set() if cancels == "a plain set" else heard_cancels()
    decoder = start(
        logic, decoders, NumpyStep(delay_s=0.001), cancelled=cancelled, time_limit_s=0.3
    )
    doomed = submit(decoder, logic, "a", "doomed", max_tokens=60000, temperature=0)
    slow = submit(decoder, logic, "b", "slow", max_tokens=60000, temperature=0)
    while doomed.tokens < 3:
        time.sleep(0.001)
    cancelled.add("doomed")
    with pytest.raises(JobCancelled):
        doomed.future.result(10)
    with pytest.raises(ModelError, match="AIMASS_JOB_TIME_LIMIT_S"):
        slow.future.result(10)
    assert doomed.tokens < 60000 and slow.tokens < 60000


def test_sequence_cancel_is_seen_once_the_cancelled_ids_are_at_their_limit(logic, decoders) -> None:
    cancelled = heard_cancels(limit=2)
    cancelled.add("old-1")
    cancelled.add("old-2")
    decoder = start(logic, decoders, NumpyStep(delay_s=0.001), cancelled=cancelled)
    doomed = submit(decoder, logic, "a", "doomed", max_tokens=60000, temperature=0)
    while doomed.tokens < 3:
        time.sleep(0.001)
    cancelled.add("doomed")  # the oldest is forgotten: as many ids as before
    assert len(cancelled) == 2
    with pytest.raises(JobCancelled):
        doomed.future.result(10)


def test_sequence_a_job_run_again_decodes_alone(logic, decoders) -> None:
    runner = NumpyStep()
    decoder = start(logic, decoders, runner)
    first = submit(decoder, logic, "q", "q1", max_tokens=50, temperature=0)
    _, _, again = logic.prepare(
        SequenceJob(model="tiny-rnn", prompt="r", max_tokens=50), LIMITS, "r"
    )
    decoder.submit(again, time.monotonic(), alone=True)
    later = submit(decoder, logic, "s", "s1", max_tokens=50, temperature=0)
    for job in (first, again, later):
        job.future.result(10)
    assert again.output is not None and again.output.batch_size == 1


def test_sequence_prompts_the_vocabulary_cannot_read_are_refused(logic) -> None:
    with pytest.raises(InvalidInput, match="no token for"):
        logic.prepare(SequenceJob(model="tiny-rnn", prompt="\u00e9"), LIMITS, "x")
    with pytest.raises(InvalidInput, match="start token"):
        logic.prepare(SequenceJob(model="tiny-rnn", prompt=""), LIMITS, "x")


def test_sequence_an_unknown_token_stands_for_what_the_vocabulary_lacks(tmp_path) -> None:
    folder = publish_sequence_model(tmp_path, unknown=True, max_length=8)
    lenient = SequenceModel(Manifest.read(folder))
    _, _, decoding = lenient.prepare(
        SequenceJob(model="tiny-rnn", prompt="a\u00e9b", max_tokens=50), LIMITS, "u"
    )
    newline = lenient.vocabulary.index("\n")
    assert decoding.prompt == [lenient.tokenizer.ids["a"], newline, lenient.tokenizer.ids["b"]]
    assert decoding.max_tokens == 5  # max_length 8, the prompt's 3 included
