"""ONNX export of the scoring graph, the Keras/onnxruntime parity check, and the atomic write.

The graph (see ``schemas/artifact.py``): raw beats in; min-max normalisation, the autoencoder,
the absolute error and the score (:data:`SCORES`) inside; ``score`` and ``sample_error`` out, with a
dynamic batch dimension. ``tf2onnx.convert.from_keras`` fails on Keras 3, so a ``tf.function`` that
calls the model is converted instead. :class:`KerasScorer` computes the same thing with Keras and
numpy: the reference the graph must match.

The convolutions' biases and ReLUs are then folded into their ``Conv`` nodes
(:mod:`ecg_anomaly.trainer.conv_fusion`), which tf2onnx leaves apart.

Normalised values are clipped to ±:data:`CLIP` first. A legal float32 beat far outside the training
range (3e38) would otherwise overflow inside the network to infinity and then NaN, and ``NaN >
threshold`` is false: such a beat would be called normal. Clipped, it scores far above any
threshold; no real beat comes near the clip (it is a thousand times the training range).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecg_anomaly.schemas.artifact import INPUT_NAME, SAMPLE_ERROR_OUTPUT, SCORE_OUTPUT, encode_metadata
from ecg_anomaly.trainer import latent as fused
from ecg_anomaly.trainer.conv_fusion import fold_conv_bias
from ecg_anomaly.trainer.errors import ExportError
from ecg_anomaly.trainer.scoring import ScoringModel

PARITY_TOLERANCE = 1e-5
OPSET = 17
CLIP = 1000.0
# Columns per block of the nearest normal's two-step arg-max (_first_largest): 32 was the
# fastest of 8, 16, 32 and 64 for banks of 256 and 512 rows.
ARGMAX_BLOCK = 32
# The artifact's ``score`` for each TrainConfig.score (schemas/artifact_metadata.schema.json).
SCORES = {"mae": "mae_normalised", "fused": "rmse_latent_knn"}


def normalise(beats: np.ndarray, norm_min: float, norm_max: float) -> np.ndarray:
    """The graph's normalisation in numpy, float32 like the graph (clip included)."""
    lo, hi = np.float32(norm_min), np.float32(norm_max)
    with np.errstate(over="ignore"):  # a huge value overflows to inf here and is clipped like the graph's
        x = (np.asarray(beats, dtype=np.float32) - lo) / (hi - lo)
    return np.clip(x, np.float32(-CLIP), np.float32(CLIP))


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray  # [N]
    sample_error: np.ndarray  # [N, L]: |reconstruction - normalised beat|
    normalised: np.ndarray  # [N, L]
    reconstruction: np.ndarray  # [N, L]


@dataclass(frozen=True)
class KerasScorer:
    """The scoring graph's definition: a Keras autoencoder, the normalisation and the score."""

    model: Any
    norm_min: float
    norm_max: float
    score: str  # a TrainConfig.score
    latent: fused.LatentScore | None = None  # with score "fused"

    def codes(self, beats: np.ndarray) -> np.ndarray:
        """The encoder's output for raw beats."""
        from ecg_anomaly.trainer.model import encoder

        x = normalise(beats, self.norm_min, self.norm_max)
        return encoder(self.model).predict(x, batch_size=1024, verbose=0)

    def __call__(
        self, beats: np.ndarray, own_row: np.ndarray | None = None, abnormal_row: np.ndarray | None = None
    ) -> Scored:
        """Scores as the graph computes them (``own_row`` and ``abnormal_row``, the beats' rows in the
        normal and the known-abnormal banks: see :func:`.latent.knn_distance`)."""
        x = normalise(beats, self.norm_min, self.norm_max)
        if self.latent is None:
            reconstruction = self.model.predict(x, batch_size=1024, verbose=0)
            error = np.abs(reconstruction - x)
            return Scored(np.mean(error, axis=1), error, x, reconstruction)
        reconstruction, codes = self._both().predict(x, batch_size=1024, verbose=0)
        error = np.abs(reconstruction - x)
        scores = fused.Beats(error, codes, own_row, x, abnormal_row).scores(self.latent)
        return Scored(scores, error, x, reconstruction)

    def _both(self) -> Any:
        from ecg_anomaly.trainer.model import reconstruction_and_code

        return reconstruction_and_code(self.model)

    def metadata(self) -> dict[str, Any]:
        """The ``score`` entries of the artifact metadata."""
        entries: dict[str, Any] = {"score": SCORES[self.score]}
        if self.latent is not None:
            entries["score_params"] = self.latent.metadata()
        return entries


def to_onnx(scorer: KerasScorer, input_length: int) -> Any:
    """The scoring graph as an ``onnx.ModelProto`` (no metadata yet)."""
    import tensorflow as tf
    import tf2onnx

    lo, hi = np.float32(scorer.norm_min), np.float32(scorer.norm_max)
    spec = [tf.TensorSpec([None, input_length], tf.float32, name=INPUT_NAME)]
    latent = scorer.latent
    network = scorer.model if latent is None else scorer._both()

    @tf.function(input_signature=spec)
    def scoring(beats: tf.Tensor) -> dict[str, tf.Tensor]:
        # Constants made inside the function: captured tensors would become extra graph inputs.
        x = (beats - tf.constant(lo)) / (tf.constant(hi) - tf.constant(lo))
        x = tf.clip_by_value(x, tf.constant(np.float32(-CLIP)), tf.constant(np.float32(CLIP)))
        if latent is None:
            error = tf.abs(network(x, training=False) - x)
            score = tf.reduce_mean(error, axis=1)
        else:
            reconstruction, codes = network(x, training=False)
            error = tf.abs(reconstruction - x)
            score = _fused_score(tf, x, error, codes, latent)
        return {
            SCORE_OUTPUT: tf.identity(score, name=SCORE_OUTPUT),
            SAMPLE_ERROR_OUTPUT: tf.identity(error, name=SAMPLE_ERROR_OUTPUT),
        }

    try:
        proto, _ = tf2onnx.convert.from_function(scoring, input_signature=spec, opset=OPSET)
    except Exception as exc:  # tf2onnx raises assorted exception types
        raise ExportError(f"ONNX conversion failed: {exc}") from exc
    _check_names(proto)
    return fold_conv_bias(proto)


def _fused_score(tf: Any, x: Any, error: Any, codes: Any, latent: fused.LatentScore) -> Any:
    """:func:`ecg_anomaly.trainer.latent.fuse` of the RMSE, the code-space k-NN distance, (with a
    subspace) the residual of the normalised beats ``x`` outside it and (with known abnormal beats) the
    distance to the nearest of them, in TensorFlow."""
    rmse = tf.sqrt(tf.reduce_mean(error * error, axis=1))
    distance = (
        _nearest_one(tf, codes, latent.bank)
        if latent.neighbours == 1
        else _nearest_distance(tf, codes, latent.bank, latent.neighbours)
    )
    w_error, w_distance, w_residual = fused.exponents(latent)
    rmse_ref, distance_ref = np.float32(latent.rmse_ref), np.float32(latent.distance_ref)
    score = (
        tf.constant(rmse_ref)
        * tf.pow(rmse / tf.constant(rmse_ref), tf.constant(w_error))
        * tf.pow(
            tf.maximum(distance / tf.constant(distance_ref), tf.constant(np.float32(fused.DISTANCE_FLOOR))),
            tf.constant(w_distance),
        )
    )
    subspace = latent.subspace
    if subspace is not None:
        centred = x - tf.constant(subspace.mean)
        components = tf.constant(subspace.components)
        rest = centred - tf.matmul(tf.matmul(centred, components, transpose_b=True), components)
        residual = tf.sqrt(tf.reduce_mean(rest * rest, axis=1))
        reference = tf.constant(np.float32(subspace.reference))
        score = score * tf.pow(residual / reference, tf.constant(w_residual))
    known = latent.known_abnormal
    if known is not None:
        ratio = _nearest_one(tf, codes, known.bank) / tf.constant(np.float32(known.reference))
        ratio = tf.clip_by_value(
            ratio, tf.constant(np.float32(fused.ABNORMAL_FLOOR)), tf.constant(np.float32(1))
        )
        score = score / tf.pow(ratio, tf.constant(np.float32(known.weight)))
    return score


def _nearest_one(tf: Any, codes: Any, bank: np.ndarray) -> Any:
    """The distance to the nearest row of ``bank``: the row with the largest 2ab - |b|² (an arg-max where
    top-k costs onnxruntime a sort per beat), then the exact distance to it. A ranking error of the
    float32 shortcut can only pick a row whose squared distance exceeds the nearest's by that error;
    close to zero, where this matters, the score's floors take over (``DISTANCE_FLOOR``,
    ``ABNORMAL_FLOOR``)."""
    blocks = -(-bank.shape[0] // ARGMAX_BLOCK)
    a, centred_bank, closeness = _closeness(tf, codes, bank, blocks * ARGMAX_BLOCK)
    offsets = a - tf.gather(tf.constant(centred_bank), _first_largest(tf, closeness, blocks))
    return tf.sqrt(tf.reduce_sum(offsets * offsets, axis=1))


def _first_largest(tf: Any, values: Any, blocks: int) -> Any:
    """Per row of ``values`` [N, blocks * ARGMAX_BLOCK], the first column holding its largest value, as
    one arg-max finds it: the largest value of each block of columns, the first block holding the
    largest of those, then the first column of that block holding it. onnxruntime's ``ArgMax`` looks
    at one value at a time (1.1 ns a column, a quarter of the default preset's graph with two banks);
    its ``ReduceMax`` is vectorised (0.13 ns), which leaves two short arg-maxes: over the blocks'
    largest values, then over one block. The blocks' maxima are taken over [N * blocks, width]: over
    the last axis of [N, blocks, width] tf2onnx writes a ``GlobalMaxPool``, 30 % slower here."""
    width = ARGMAX_BLOCK
    by_block = tf.reshape(values, [-1, width])  # [N * blocks, width]
    block = tf.argmax(tf.reshape(tf.reduce_max(by_block, axis=1), [-1, blocks]), axis=1)
    rows = tf.range(tf.shape(values, out_type=tf.int64)[0], dtype=tf.int64) * blocks + block
    within = tf.gather(by_block, rows)  # [N, width]: each row's block
    return block * width + tf.argmax(within, axis=1)


def _nearest_distance(tf: Any, codes: Any, bank: np.ndarray, neighbours: int) -> Any:
    """:func:`ecg_anomaly.trainer.latent.knn_distance` (without left-out rows) in TensorFlow: the
    candidates ranked by :func:`_closeness`, then exact distances to them."""
    a, centred_bank, closeness = _closeness(tf, codes, bank)
    candidates = min(bank.shape[0], neighbours + fused.EXTRA_CANDIDATES)
    rows = tf.math.top_k(closeness, k=candidates).indices
    offsets = a[:, None, :] - tf.gather(tf.constant(centred_bank), rows)  # [N, candidates, D]: exact
    exact = tf.reduce_sum(offsets * offsets, axis=2)
    nearest = -tf.math.top_k(-exact, k=neighbours).values
    return tf.reduce_mean(tf.sqrt(nearest), axis=1)


def _closeness(tf: Any, codes: Any, bank: np.ndarray, columns: int = 0) -> tuple[Any, np.ndarray, Any]:
    """``(codes, bank, 2ab - |b|²)``, codes and bank centred on the bank's mean: the ranking of the bank
    by distance (|a - b|² less |a|², the same for every row) in one matrix product and one addition
    over [N, bank]. Centring leaves distances alone and shrinks the float32 cancellation. With
    ``columns`` past the bank's rows, the bank is padded with zero rows whose closeness is the lowest
    float32: never the largest."""
    centre = bank.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred_bank = bank - centre
    offset = -(centred_bank * centred_bank).sum(axis=1)
    padding = max(columns - bank.shape[0], 0)
    if padding:
        centred_bank = np.concatenate([centred_bank, np.zeros((padding, bank.shape[1]), np.float32)])
        offset = np.concatenate([offset, np.full(padding, np.finfo(np.float32).min, np.float32)])
    a = codes - tf.constant(centre)
    closeness = tf.matmul(a, tf.constant(2 * centred_bank.T)) + tf.constant(offset[None, :])
    return a, centred_bank, closeness


def _check_names(proto: Any) -> None:
    inputs = [i.name for i in proto.graph.input]
    outputs = sorted(o.name for o in proto.graph.output)
    if inputs != [INPUT_NAME] or outputs != sorted([SCORE_OUTPUT, SAMPLE_ERROR_OUTPUT]):
        raise ExportError(f"unexpected ONNX graph signature: inputs {inputs}, outputs {outputs}")


def check_parity(
    onnx_scores: np.ndarray, reference: np.ndarray, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Max |onnx - keras| over the beats, each relative to max(1, |keras|); :class:`ExportError` above
    ``tolerance``. float32 keeps about 7 digits, so a score of 30 is as exact at 3e-5 as one of 0.3 at 3e-7.
    """
    if onnx_scores.shape != reference.shape:
        raise ExportError(f"parity: ONNX gave shape {onnx_scores.shape}, Keras {reference.shape}")
    expected = reference.astype(np.float64)
    diff = float(
        np.max(np.abs(onnx_scores.astype(np.float64) - expected) / np.maximum(1.0, np.abs(expected)))
    )
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
