"""ONNX export of the scoring graph, the Keras/onnxruntime parity check, and the atomic write.

The graph (see ``schemas/artifact.py``): raw beats in; min-max normalisation,
the autoencoder and the absolute error inside; ``score`` and ``sample_error``
out, with a dynamic batch dimension. ``tf2onnx.convert.from_keras`` fails on
Keras 3, so a ``tf.function`` that calls the model is converted instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ecg_anomaly.schemas.artifact import INPUT_NAME, SAMPLE_ERROR_OUTPUT, SCORE_OUTPUT, encode_metadata
from ecg_anomaly.trainer.errors import ExportError
from ecg_anomaly.trainer.scoring import ScoringModel

PARITY_TOLERANCE = 1e-5
OPSET = 17


def normalise(beats: np.ndarray, norm_min: float, norm_max: float) -> np.ndarray:
    """The graph's normalisation in numpy, float32 like the graph."""
    lo, hi = np.float32(norm_min), np.float32(norm_max)
    return (np.asarray(beats, dtype=np.float32) - lo) / (hi - lo)


def keras_scores(model: Any, beats: np.ndarray, norm_min: float, norm_max: float) -> np.ndarray:
    """The score (mean absolute error in normalised space) computed by Keras, for the parity check."""
    x = normalise(beats, norm_min, norm_max)
    reconstruction = model.predict(x, batch_size=1024, verbose=0)
    return np.mean(np.abs(reconstruction - x), axis=1)


def to_onnx(model: Any, norm_min: float, norm_max: float, input_length: int) -> Any:
    """The scoring graph as an ``onnx.ModelProto`` (no metadata yet)."""
    import tensorflow as tf
    import tf2onnx

    lo, hi = np.float32(norm_min), np.float32(norm_max)
    spec = [tf.TensorSpec([None, input_length], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=spec)
    def scoring(beats: tf.Tensor) -> dict[str, tf.Tensor]:
        # Constants made inside the function: captured tensors would become extra graph inputs.
        x = (beats - tf.constant(lo)) / (tf.constant(hi) - tf.constant(lo))
        error = tf.abs(model(x, training=False) - x)
        return {
            SCORE_OUTPUT: tf.identity(tf.reduce_mean(error, axis=1), name=SCORE_OUTPUT),
            SAMPLE_ERROR_OUTPUT: tf.identity(error, name=SAMPLE_ERROR_OUTPUT),
        }

    try:
        proto, _ = tf2onnx.convert.from_function(scoring, input_signature=spec, opset=OPSET)
    except Exception as exc:  # tf2onnx raises assorted exception types
        raise ExportError(f"ONNX conversion failed: {exc}") from exc
    _check_names(proto)
    return proto


def _check_names(proto: Any) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = sorted(o.name for o in proto.graph.output)
    if inputs != [INPUT_NAME] or outputs != sorted([SCORE_OUTPUT, SAMPLE_ERROR_OUTPUT]):
        raise ExportError(f"unexpected ONNX graph signature: inputs {inputs}, outputs {outputs}")


def check_parity(
    onnx_scores: np.ndarray, reference: np.ndarray, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Max |onnx - keras| over the beats; :class:`ExportError` above ``tolerance``."""
    if onnx_scores.shape != reference.shape:
        raise ExportError(f"parity: ONNX gave shape {onnx_scores.shape}, Keras {reference.shape}")
    diff = float(np.max(np.abs(onnx_scores.astype(np.float64) - reference.astype(np.float64))))
    if not diff <= tolerance:
        raise ExportError(
            f"parity check failed: ONNX and Keras scores differ by up to {diff:.3g} (limit {tolerance:g})"
        )
    return diff


def with_metadata(proto: Any, metadata: dict[str, Any]) -> bytes:
    """Validated metadata → ``metadata_props``; returns the checked, serialised model."""
    import onnx

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, encode_metadata(metadata))
    proto.producer_name = "ecg-anomaly trainer"
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model is invalid: {exc}") from exc
    return proto.SerializeToString()


def write_artifact(model_bytes: bytes, path: Path, probe: np.ndarray, expected: np.ndarray) -> Path:
    """Write to a temporary file beside ``path``, reload and re-score ``probe``, then rename.

    A failure removes the temporary file and leaves any previous artifact untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(model_bytes)
        scores, _ = ScoringModel.load(tmp).score(probe)
        check_parity(scores, expected)
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, ExportError):
            raise
        raise ExportError(f"{path}: could not write the artifact ({exc})") from exc
    return path


def save_keras(model: Any, path: Path) -> Path:
    """The Keras model file beside the ONNX one, also written to a temporary name first."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{path}: could not save the Keras model ({exc})") from exc
    return path
