"""Tensor jobs (``aimass.infer``): a model's named tensors in, its named tensors out.

Every model answers them, whatever its kind: the job's tensors are checked against the
manifest's inputs (names, datatypes, shapes) before anything runs, so that a bad job
fails alone with ``InvalidJob`` that names the tensor, what was expected and what came,
and never joins (or spoils) a batch. No queue here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from aimass.protocol.contract import InferJob
from aimass.protocol.errors import InvalidJob, ModelError
from aimass.protocol.manifest import Manifest, ModelKind, TensorSpec
from aimass.protocol.tensors import (
    DATATYPES,
    array_from_data,
    describe_shape,
    tensor_document,
)
from aimass.worker.batcher import BatchOutput
from aimass.worker.kinds import Limits
from aimass.worker.runs import Feeds


@dataclass(frozen=True)
class Wanted:
    """The outputs a job asked for, in its order: their index among the model's
    outputs, their name, and whether their data goes back as bytes."""

    outputs: list[tuple[int, str, bool]]


def describe_specs(specs: list[TensorSpec]) -> str:
    """``name DATATYPE[shape]`` for each tensor, as an error lists what a model takes."""
    return ", ".join(
        f"{spec.name} {DATATYPES.get(spec.dtype, spec.dtype)}{describe_shape(spec.shape)}"
        for spec in specs
    )


class TensorModel:
    """Runs infer jobs on one model version."""

    kind = ModelKind.tensor

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.inputs = {spec.name: spec for spec in manifest.inputs}
        self.output_names = [spec.name for spec in manifest.outputs]
        self.batched = manifest.batched

    def prepare(
        self, job: InferJob, limits: Limits, job_id: str | None = None
    ) -> tuple[Feeds, int, Wanted]:
        name = self.manifest.name
        arrays: dict[str, np.ndarray] = {}
        budget = limits.max_payload_bytes  # for all of the job's tensors together
        for index, tensor in enumerate(job.inputs):
            spec = self.inputs.get(tensor.name)
            if spec is None:
                raise InvalidJob(
                    f"inputs[{index}]: model {name!r} has no input {tensor.name!r}; its "
                    f"inputs are {describe_specs(self.manifest.inputs)}"
                )
            if tensor.name in arrays:
                raise InvalidJob(f"inputs[{index}]: input {tensor.name!r} is given twice")
            expected = DATATYPES.get(spec.dtype, spec.dtype)
            if tensor.datatype != expected:
                raise InvalidJob(
                    f"input {tensor.name!r}: expected datatype {expected}, got {tensor.datatype}"
                )
            self._check_shape(spec, tensor.shape)
            array = array_from_data(tensor.name, tensor.datatype, tensor.shape, tensor.data, budget)
            budget -= array.nbytes
            arrays[tensor.name] = array
        missing = [spec for spec in self.manifest.inputs if spec.name not in arrays]
        if missing:
            raise InvalidJob(
                f"missing input{'s' if len(missing) > 1 else ''} "
                f"{describe_specs(missing)}; model {name!r} takes "
                f"{describe_specs(self.manifest.inputs)}"
            )
        return self._feeds(arrays), self._size(arrays), self._wanted(job)

    def _check_shape(self, spec: TensorSpec, shape: list[int]) -> None:
        expected = describe_shape(spec.shape)
        if len(shape) != len(spec.shape):
            raise InvalidJob(
                f"input {spec.name!r}: expected shape {expected} (rank {len(spec.shape)}), "
                f"got {shape} (rank {len(shape)})"
            )
        for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
            if got < 1 or (want >= 0 and got != want):
                what = "the batch size" if axis == 0 and self.batched else f"dimension {axis}"
                must = "at least 1" if want < 0 else str(want)
                raise InvalidJob(
                    f"input {spec.name!r}: expected shape {expected}, got {shape} "
                    f"({what} is {got}, must be {must})"
                )

    def _size(self, arrays: dict[str, np.ndarray]) -> int:
        if not self.batched:
            return 1
        sizes = {name: array.shape[0] for name, array in arrays.items()}
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{name} {size}" for name, size in sizes.items())
            raise InvalidJob(
                f"the inputs' batch sizes (first dimensions) differ: {listed}; every input "
                "of a job holds the same number of rows"
            )
        return next(iter(sizes.values()))

    def _feeds(self, arrays: dict[str, np.ndarray]) -> Feeds:
        """A graph without a batch dimension gets the job's tensors as they are: the
        batcher sees one row (a leading axis of 1) that its runner takes off again."""
        if self.batched:
            return arrays
        return {name: array[None] for name, array in arrays.items()}

    def _wanted(self, job: InferJob) -> Wanted:
        default = job.binary_output
        if job.outputs is None:
            return Wanted([(i, name, default) for i, name in enumerate(self.output_names)])
        wanted = []
        for request in job.outputs:
            if request.name not in self.output_names:
                raise InvalidJob(
                    f"outputs: model {self.manifest.name!r} has no output {request.name!r}; "
                    f"its outputs are {describe_specs(self.manifest.outputs)}"
                )
            binary = request.binary if request.binary is not None else default
            wanted.append((self.output_names.index(request.name), request.name, binary))
        return Wanted(wanted)

    def finish(self, job: InferJob, context: Wanted, output: BatchOutput) -> dict[str, Any]:
        outputs = []
        for index, name, binary in context.outputs:
            array = output.outputs[index]
            if not self.batched:
                array = array[0]
            if not binary and array.dtype.kind == "f" and not np.isfinite(array).all():
                # JSON has no NaN or Infinity; raw bytes carry them.
                raise ModelError(
                    f"output {name!r} holds NaN or infinite values, which JSON cannot "
                    "carry; ask for it as binary data (parameters.binary_data_output)"
                )
            outputs.append(tensor_document(name, array, binary))
        return {
            "model_name": self.manifest.name,
            "model_version": str(self.manifest.version),
            **({"id": job.id} if job.id is not None else {}),
            "outputs": outputs,
        }

    def warmup_feeds(self, batch_size: int) -> Feeds:
        """Zeros of every input, open dimensions 1, at ``batch_size`` rows."""
        feeds = {}
        for spec in self.manifest.inputs:
            dims = [d if d > 0 else 1 for d in spec.shape]
            if self.batched:
                dims = [batch_size, *dims[1:]] if dims else [batch_size]
            else:
                dims = [1, *dims]
            feeds[spec.name] = np.zeros(dims, dtype=np.dtype(spec.dtype))
        return feeds
