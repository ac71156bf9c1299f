"""Seeded, reproducible training of the zoo: the digits classifier, the conditional GAN
and the small tabular networks.

The digits models read the uint8 images of ``aimass.export.data`` and scale them exactly
as a worker does (1/255 for the classifier; the generator learns [-1, 1], which the manifest's
postprocessing maps back to 0..255); the tabular ones read ``aimass.export.tabular``'s
measurements as they are. Shuffling and augmentation draw from one NumPy
generator seeded with ``seed``; Keras's initialisers and dropout from
``keras.utils.set_random_seed``; TensorFlow's kernels are made deterministic, so the
same seed gives the same weights on the same machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from aimass.export.data import DigitsSplit, to_model_input
from aimass.export.repository import Progress
from aimass.export.tabular import TabularSplit


@dataclass(frozen=True)
class Schedule:
    epochs: int
    batch_size: int
    learning_rate: float


CLASSIFIER_SCHEDULE = Schedule(epochs=30, batch_size=64, learning_rate=2e-3)
CLASSIFIER_QUICK = Schedule(epochs=2, batch_size=64, learning_rate=2e-3)
# Measured at seed 0: class agreement 0.97 from epoch 20 on, diversity rising to epoch 30.
GAN_SCHEDULE = Schedule(epochs=30, batch_size=64, learning_rate=2e-4)
GAN_QUICK = Schedule(epochs=2, batch_size=64, learning_rate=2e-4)
# A few hundred examples: whole epochs take milliseconds, so the epochs are many.
# Measured at seed 0: the diabetes regression's test R² peaks near epoch 40 (0.49).
TABULAR_SCHEDULE = Schedule(epochs=40, batch_size=32, learning_rate=1e-2)
TABULAR_QUICK = Schedule(epochs=3, batch_size=32, learning_rate=1e-2)
_SHIFT_PIXELS = 2  # augmentation: digits shifted by up to 2 pixels each way
_PROGRESS_LINES = 5  # a language model's training reports this many times


@dataclass(frozen=True)
class TextSchedule:
    """A language model's training: ``steps`` batches of ``batch_size`` windows of
    ``window`` tokens, each drawn at a random offset of the text."""

    steps: int
    batch_size: int
    window: int
    learning_rate: float


# Measured at seed 0 (2 shared cores): 90 to 160 s, held-out loss 1.66 nats/character.
CHARLM_SCHEDULE = TextSchedule(steps=500, batch_size=64, window=128, learning_rate=4e-3)
CHARLM_QUICK = TextSchedule(steps=10, batch_size=32, window=64, learning_rate=4e-3)


@dataclass(frozen=True)
class TrainingReport:
    epochs: int
    steps: int
    seconds: float
    final: dict[str, float]  # the last epoch's losses and metrics

    def as_manifest(self, seed: int, quick: bool) -> dict[str, Any]:
        return {
            "seed": seed,
            "quick": quick,
            "epochs": self.epochs,
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
            "final": {key: round(value, 4) for key, value in self.final.items()},
        }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow; call before building a model (initialisers draw)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_classifier(
    model: keras.Model, split: DigitsSplit, schedule: Schedule, seed: int, progress: Progress
) -> TrainingReport:
    """Train on the split's train part only; the test part stays unseen."""
    rng = np.random.default_rng(seed)
    steps_per_epoch = int(np.ceil(len(split.train_labels) / schedule.batch_size))
    learning_rate = keras.optimizers.schedules.CosineDecay(
        schedule.learning_rate, decay_steps=schedule.epochs * steps_per_epoch
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    final: dict[str, float] = {}
    for epoch in range(1, schedule.epochs + 1):
        order = rng.permutation(len(split.train_labels))
        images = to_model_input(shift_randomly(split.train_images[order], rng))
        history = model.fit(
            images,
            split.train_labels[order],
            batch_size=schedule.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        final = {key: float(values[-1]) for key, values in history.history.items()}
        progress(
            f"{model.name} epoch {epoch}/{schedule.epochs}: loss {final['loss']:.4f}, "
            f"train accuracy {final['accuracy']:.4f} ({time.perf_counter() - started:.1f} s)"
        )
    return TrainingReport(
        schedule.epochs, schedule.epochs * steps_per_epoch, time.perf_counter() - started, final
    )


def train_tabular(
    model: keras.Model,
    split: TabularSplit,
    schedule: Schedule,
    loss: str,
    seed: int,
    progress: Progress,
) -> TrainingReport:
    """Train on the split's train part only, one ``fit`` for every epoch (seeded shuffling)."""
    steps_per_epoch = int(np.ceil(len(split.train_targets) / schedule.batch_size))
    learning_rate = keras.optimizers.schedules.CosineDecay(
        schedule.learning_rate, decay_steps=schedule.epochs * steps_per_epoch
    )
    metrics = ["accuracy"] if loss == "sparse_categorical_crossentropy" else ["mae"]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(split.train_targets))
    started = time.perf_counter()
    history = model.fit(
        split.train_features[order],
        split.train_targets[order],
        batch_size=schedule.batch_size,
        epochs=schedule.epochs,
        shuffle=True,
        verbose=0,
    )
    final = {key: float(values[-1]) for key, values in history.history.items()}
    seconds = time.perf_counter() - started
    figures = ", ".join(f"{key} {value:.4f}" for key, value in final.items())
    progress(f"{model.name}: {schedule.epochs} epochs, {figures} ({seconds:.1f} s)")
    return TrainingReport(schedule.epochs, schedule.epochs * steps_per_epoch, seconds, final)


def train_language_model(
    model: keras.Model,
    tokens: NDArray[np.int32],
    schedule: TextSchedule,
    seed: int,
    progress: Progress,
) -> TrainingReport:
    """Teach ``model`` (token ids (batch, time) -> logits (batch, time, vocabulary)) each
    next token of windows drawn at seeded random offsets of ``tokens``; every window
    starts from a zero state, as a served sequence does."""
    rng = np.random.default_rng(seed)
    count = schedule.steps * schedule.batch_size
    starts = rng.integers(0, len(tokens) - schedule.window - 1, count)
    windows = tokens[starts[:, None] + np.arange(schedule.window + 1)]
    learning_rate = keras.optimizers.schedules.CosineDecay(
        schedule.learning_rate, decay_steps=schedule.steps
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    started = time.perf_counter()
    final: dict[str, float] = {}
    done = 0
    for part in np.array_split(np.arange(schedule.steps), min(_PROGRESS_LINES, schedule.steps)):
        rows = slice(part[0] * schedule.batch_size, (part[-1] + 1) * schedule.batch_size)
        history = model.fit(
            windows[rows, :-1],
            windows[rows, 1:],
            batch_size=schedule.batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        done += len(part)
        final = {key: float(values[-1]) for key, values in history.history.items()}
        progress(
            f"{model.name} step {done}/{schedule.steps}: loss {final['loss']:.4f} nats/token "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return TrainingReport(1, schedule.steps, time.perf_counter() - started, final)


def shift_randomly(images: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """Each image moved by a random whole number of pixels in -2..2 per axis, zero-filled."""
    count, height, width = images.shape
    margin = _SHIFT_PIXELS
    padded = np.pad(images, ((0, 0), (margin, margin), (margin, margin)))
    top = rng.integers(0, 2 * margin + 1, size=(count,))
    left = rng.integers(0, 2 * margin + 1, size=(count,))
    rows = (top[:, None] + np.arange(height))[:, :, None]
    cols = (left[:, None] + np.arange(width))[:, None, :]
    return padded[np.arange(count)[:, None, None], rows, cols]


def train_gan(
    generator: keras.Model,
    discriminator: keras.Model,
    split: DigitsSplit,
    schedule: Schedule,
    seed: int,
    progress: Progress,
) -> TrainingReport:
    """Adversarial training on the train part of the split; only ``generator`` is kept."""
    rng = np.random.default_rng(seed)
    real_images = (split.train_images.astype(np.float32) / np.float32(127.5) - 1.0)[..., np.newaxis]
    real_labels = split.train_labels
    latent_size = int(generator.inputs[0].shape[-1])
    class_count = int(discriminator.outputs[1].shape[-1])
    step = _gan_step(generator, discriminator, schedule.learning_rate)
    steps_per_epoch = len(real_labels) // schedule.batch_size  # full batches keep batch norm steady
    started = time.perf_counter()
    final: dict[str, float] = {}
    for epoch in range(1, schedule.epochs + 1):
        order = rng.permutation(len(real_labels))
        totals = np.zeros(2)
        for index in range(steps_per_epoch):
            batch = order[index * schedule.batch_size : (index + 1) * schedule.batch_size]
            latents = rng.standard_normal((len(batch), latent_size), dtype=np.float32)
            wanted = rng.integers(0, class_count, len(batch))
            losses = step(real_images[batch], real_labels[batch], latents, wanted)
            totals += [float(loss) for loss in losses]
        final = {
            "discriminator_loss": float(totals[0] / steps_per_epoch),
            "generator_loss": float(totals[1] / steps_per_epoch),
        }
        progress(
            f"{generator.name} epoch {epoch}/{schedule.epochs}: discriminator loss "
            f"{final['discriminator_loss']:.4f}, generator loss {final['generator_loss']:.4f} "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return TrainingReport(
        schedule.epochs, schedule.epochs * steps_per_epoch, time.perf_counter() - started, final
    )


def _gan_step(
    generator: keras.Model, discriminator: keras.Model, learning_rate: float
) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
    """One compiled step: the discriminator learns real vs fake and the real images'
    classes; the generator learns to be taken for real and for the class it was given."""
    generator_optimizer = keras.optimizers.Adam(learning_rate, beta_1=0.5)  # DCGAN's settings
    discriminator_optimizer = keras.optimizers.Adam(learning_rate, beta_1=0.5)
    realness = keras.losses.BinaryCrossentropy(from_logits=True)
    classes = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(
        real: tf.Tensor, labels: tf.Tensor, latents: tf.Tensor, wanted: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as discriminator_tape, tf.GradientTape() as generator_tape:
            fake = generator([latents, wanted], training=True)
            real_score, real_classes = discriminator([real, labels], training=True)
            fake_score, fake_classes = discriminator([fake, wanted], training=True)
            discriminator_loss = (
                realness(
                    tf.fill(tf.shape(real_score), 0.9), real_score
                )  # one-sided label smoothing
                + realness(tf.zeros_like(fake_score), fake_score)
                + classes(labels, real_classes)
            )
            generator_loss = realness(tf.ones_like(fake_score), fake_score) + classes(
                wanted, fake_classes
            )
        _apply(discriminator_optimizer, discriminator_tape, discriminator_loss, discriminator)
        _apply(generator_optimizer, generator_tape, generator_loss, generator)
        return discriminator_loss, generator_loss

    return step


def _apply(
    optimizer: keras.Optimizer, tape: tf.GradientTape, loss: tf.Tensor, model: keras.Model
) -> None:
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
