"""The zoo's sequence model, ``charlm``: a character-level GRU language model trained on
the standard library's own source (``aimass.export.text``), published as one decoding
step (``aimass.export.sequence_step``).

Gates: the multi-step parity gate (32 steps in a row over held-out text), and a held-out
loss of at most 2.0 nats per character (seed 0 reaches 1.66; a model that only learnt
character frequencies stays near 3). The manifest records the held-out loss and
perplexity, measured on the ONNX step graph, and a sample it wrote from ``def ``.
"""

from __future__ import annotations

from aimass.export import quality
from aimass.export.parity import SEQUENCE_TOLERANCE
from aimass.export.repository import Progress, PublishedModel
from aimass.export.sequence_quality import held_out_loss, write_sample
from aimass.export.text import (
    END_TOKEN,
    HELD_OUT_MODULES,
    TRAIN_MODULES,
    UNKNOWN_TOKEN,
    VOCABULARY,
    load_text_split,
)
from aimass.export.zoo_options import ZooOptions
from aimass.protocol.manifest import BatchingSpec, SequenceSpec, SequenceState

MAX_HELD_OUT_LOSS = 2.0
# One step of 128 sequences is a (128, 288) by (288, 768) product and a few small ones:
# well under a millisecond, so a worker can keep many sequences in one step.
CHARLM_BATCHING = BatchingSpec(max_batch_size=128, max_queue_delay_ms=1.0)
SAMPLE_PROMPT = "def "
SAMPLE_TOKENS = 240
SAMPLE_TEMPERATURE = 0.7
HELD_OUT_STREAMS = 128
QUICK_HELD_OUT_STEPS = 64  # quick mode measures the loss on a slice of the held-out text
STATE = "state"
NEXT_STATE = "next_state"


def publish_charlm(options: ZooOptions, progress: Progress) -> PublishedModel:
    from aimass.export.publish import publish
    from aimass.export.sequence_step import (
        StepSignature,
        convert_step_checked,
        parity_tokens,
        step_function,
    )
    from aimass.export.training import (
        CHARLM_QUICK,
        CHARLM_SCHEDULE,
        seed_everything,
        train_language_model,
    )
    from aimass.export.zoo.charlm import STATE_SIZE, build_charlm, charlm_step

    split = load_text_split()
    progress(f"charlm: {split.description()}")
    seed_everything(options.seed)
    model = build_charlm(len(VOCABULARY))
    schedule = CHARLM_QUICK if options.quick else CHARLM_SCHEDULE
    report = train_language_model(model, split.train, schedule, options.seed, progress)
    signature = StepSignature((SequenceState(input=STATE, output=NEXT_STATE, shape=[STATE_SIZE]),))
    candidate = convert_step_checked(
        "charlm",
        step_function(charlm_step(model), signature),
        signature,
        parity_tokens(split.held_out),
        SEQUENCE_TOLERANCE,
        options.opset,
        progress,
    )
    spec = SequenceSpec(
        vocabulary=VOCABULARY,
        token_input=signature.token,
        logits_output=signature.logits,
        state=list(signature.states),
        start_token=END_TOKEN,  # a sequence starts where a file does: after an end token
        end_token=END_TOKEN,
        unknown_token=UNKNOWN_TOKEN,
        sample_prompt=SAMPLE_PROMPT,
    )
    figures = held_out_loss(
        candidate.model_bytes,
        spec,
        split.held_out,
        HELD_OUT_STREAMS,
        QUICK_HELD_OUT_STEPS if options.quick else None,
    )
    progress(
        f"charlm: held-out loss {figures['held_out_loss']:.4f} nats/character, perplexity "
        f"{figures['perplexity']:.3f} on {figures['held_out_tokens']:,} characters"
    )
    quality.enforce_ceiling(
        "charlm", "held-out loss", figures["held_out_loss"], MAX_HELD_OUT_LOSS, options.quick
    )
    sample = write_sample(
        candidate.model_bytes,
        spec,
        SAMPLE_PROMPT,
        SAMPLE_TOKENS,
        SAMPLE_TEMPERATURE,
        options.seed,
    )
    progress(f"charlm: sample from {SAMPLE_PROMPT!r}: {SAMPLE_PROMPT + sample!r}")
    figures |= {
        "held_out_files": [f"{module}.py" for module in HELD_OUT_MODULES],
        "sample": {
            "temperature": SAMPLE_TEMPERATURE,
            "seed": options.seed,
            "max_tokens": SAMPLE_TOKENS,
        },
        "gate": {"max_held_out_loss": MAX_HELD_OUT_LOSS, "enforced": not options.quick},
    }
    return publish(
        options.repository,
        candidate,
        {
            "sequence": spec.model_copy(update={"sample": sample}),
            "batching": CHARLM_BATCHING,
            "quality": figures,
            "training": {
                **report.as_manifest(options.seed, options.quick),
                "windows": schedule.steps * schedule.batch_size,
                "window_tokens": schedule.window,
                "data": split.description(),
                "train_files": [f"{module}.py" for module in TRAIN_MODULES],
            },
        },
    )
