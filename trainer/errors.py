"""Errors the trainer raises on purpose; the CLI prints them as one line."""

from ecg_anomaly.base.errors import EcgAnomalyError


class TrainerDependencyError(EcgAnomalyError):
    """A training-only dependency (TensorFlow, tf2onnx, ...) is not installed."""


class ExportError(EcgAnomalyError):
    """The ONNX export failed or did not match the Keras model closely enough."""


def missing_training_extra(exc: ImportError) -> TrainerDependencyError:
    """The message users see when ``pip install '.[train]'`` was not run."""
    return TrainerDependencyError(
        f"training needs the 'train' extra ({exc.name or exc} is not installed): pip install '.[train]'"
    )


class ThresholdError(EcgAnomalyError):
    """A threshold policy cannot be applied to the errors it was given."""


class TrainingError(EcgAnomalyError):
    """Training finished but its result cannot be used as it stands (the message says why)."""
