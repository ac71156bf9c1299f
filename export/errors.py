"""Errors that stop a model from being published; each message says what was wrong and
what was expected. The CLI prints them and exits with status 1."""

from __future__ import annotations


class ExportError(Exception):
    """Base of every error that refuses to publish a model."""


class InvalidModelNameError(ExportError, ValueError):
    """The name cannot serve as a folder and a queue name."""


class UnsupportedModelError(ExportError):
    """The model cannot be read, or its inputs and outputs do not fit the requested kind."""


class ConversionError(ExportError):
    """tf2onnx failed, or produced a graph whose inputs or outputs are not the expected ones."""


class ParityError(ExportError):
    """ONNX Runtime's outputs differ from TensorFlow's by more than the tolerance."""

    def __init__(
        self, model: str, output: str, measured: float, tolerance: float, where: str = ""
    ) -> None:
        self.measured = measured
        self.tolerance = tolerance
        super().__init__(
            f"parity check failed for model '{model}': output '{output}'{where} differs between "
            f"TensorFlow and ONNX Runtime by up to {measured:.3g} (max abs error), more than "
            f"the allowed {tolerance:.3g}. Check the conversion (opset, unsupported ops) or "
            "raise --tolerance if the difference is expected"
        )


class StepGraphError(UnsupportedModelError):
    """A sequence model's graph is not one decoding step: its token input, logits output
    and state pairs are missing, ambiguous, or of mismatched shapes."""


class QualityError(ExportError):
    """A trained zoo model missed its quality gate (test accuracy, class agreement)."""
