"""The fused score: reconstruction error and distance to the nearest training normals in the code space.

An autoencoder trained on normal beats reconstructs some abnormal ones well too, and a few
hundred training normals leave gaps that its reconstruction error calls abnormal. The code
it learnt is a better space to ask "does this beat look like a beat we know to be normal?":
the distance from a beat's code to its ``k`` nearest codes of training normals separates the
classes better than the error, and the two disagree on different beats. The score fuses them
as a weighted geometric mean of the two, each divided by its median over held-out normal
beats, and scaled back to the units of the reconstruction error::

    score = rmse_ref * (rmse / rmse_ref) ** w * (distance / distance_ref) ** (1 - w)

so a typical normal beat scores about ``rmse_ref`` (a root-mean-square error in normalised
units, the scale the worker's histograms expect) and ``w`` = 1 is the plain error. The distance
ratio is floored at :data:`DISTANCE_FLOOR` (written ``distance / distance_ref`` below as above).

Optionally a third factor joins with weight ``p`` (the others' weights shrink by ``1 - p``): the
residual of the normalised beat outside the first few principal components of the fitted normal
beats, divided by its held-out median. On a few hundred beats a linear subspace generalises where
the autoencoder and the nearest normals are thin (a :class:`Subspace`; two matrix products in the
graph)::

    score = rmse_ref * (rmse / rmse_ref) ** (w (1 - p)) * (distance / distance_ref) ** ((1 - w)(1 - p))
            * (residual / residual_ref) ** p

With known abnormal beats in the training split, the score is also raised for a beat close to one
of them: divided by ``ratio ** q``, where ``ratio`` is the distance from the beat's code to the
nearest code of a training abnormal beat over its held-out median, clipped to ``[floor, 1]`` (a
:class:`KnownAbnormal`). A beat at least as far from the known abnormal beats as a typical normal
beat keeps the score above; a beat like one of them scores up to ``floor ** -q`` times higher. So
nothing scores lower for being unlike the known abnormal beats, and a beat unlike anything seen
scores as it did without them. On development splits this also raised the ROC AUC of each abnormal
class held out of the bank (docs/training.md)::

    score = (...the score above...) / clip(abnormal / abnormal_ref, floor, 1) ** q

This module is numpy only: the reference the exported graph is checked against.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecg_anomaly.trainer.errors import TrainingError
from ecg_anomaly.trainer.evaluation import curves, roc_auc


@dataclass(frozen=True)
class Subspace:
    """The first principal components of normalised normal beats the model fitted, and the weight ``p``
    of the residual outside them in the fused score (``reference``: its held-out median, 0 until then)."""

    mean: np.ndarray  # float32 [L]
    components: np.ndarray  # float32 [n, L], orthonormal rows
    weight: float
    reference: float = 0.0

    @classmethod
    def fit(cls, normalised: np.ndarray, components: int, weight: float) -> Subspace:
        x = np.asarray(normalised, dtype=np.float64)
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        return cls(mean.astype(np.float32), vt[:components].astype(np.float32), weight)

    def residual(self, normalised: np.ndarray) -> np.ndarray:
        """Root-mean-square over samples of what the components leave of each centred beat (float32)."""
        centred = np.asarray(normalised, dtype=np.float32) - self.mean
        rest = centred - (centred @ self.components.T) @ self.components
        return np.sqrt(np.mean(rest * rest, axis=1, dtype=np.float32))

    def metadata(self) -> dict[str, Any]:
        return {
            "components": int(self.components.shape[0]),
            "weight": self.weight,
            "reference": self.reference,
        }


# The known-abnormal distance ratio is floored: a beat whose code duplicates a known abnormal beat's
# would divide by zero, and near zero the ratio is mostly float32 noise of the codes (onnxruntime's
# and Keras's differ by about 1e-7 of their size), which its power would amplify. Any beat this close
# to a known abnormal beat counts as close as it gets; on development splits the floor changed no ROC
# AUC in its fourth decimal (the median normal beat sits at 1).
ABNORMAL_FLOOR = 0.2

# The distance to the training normals over its reference is floored too, for the same reasons: with
# k = 1 a beat whose code duplicates a bank code would score 0, and near zero the ratio is float32
# noise (the graph's arg-max may pick, between two bank codes nearer each other than its shortcut's
# error, the other one). A beat within a twentieth of the median normal beat's distance is as normal
# as the score can tell; no threshold comes near such scores.
DISTANCE_FLOOR = 0.05


@dataclass(frozen=True)
class KnownAbnormal:
    """Codes of abnormal beats of the training split, the power ``q`` of the raise for beats close to
    them, and (``reference``) the held-out median of the distance to the nearest, 0 until calibrated."""

    bank: np.ndarray  # float32 [A, D]
    weight: float
    reference: float = 0.0

    def ratio(self, codes: np.ndarray, own_row: np.ndarray | None = None) -> np.ndarray:
        """Distance to the nearest bank code over the reference, clipped to ``[floor, 1]`` (float32);
        ``own_row`` as in :func:`knn_distance`, for abnormal beats that are in the bank themselves."""
        distance = knn_distance(codes, self.bank, 1, own_row) / np.float32(self.reference)
        return np.clip(distance, np.float32(ABNORMAL_FLOOR), np.float32(1))

    def metadata(self) -> dict[str, Any]:
        return {
            "bank_size": int(self.bank.shape[0]),
            "weight": self.weight,
            "reference": self.reference,
            "floor": ABNORMAL_FLOOR,
        }


@dataclass(frozen=True)
class LatentScore:
    """Everything the graph needs besides the autoencoder: the bank of codes and the fusion constants."""

    bank: np.ndarray  # float32 [M, D]: codes of training-split normal beats (never test beats)
    neighbours: int  # k
    rmse_weight: float  # w in [0, 1]
    rmse_ref: float  # median RMSE of held-out normal beats
    distance_ref: float  # median code distance of held-out normal beats
    selection: dict[str, float] = field(default_factory=dict)  # validation ROC AUC of each candidate k
    subspace: Subspace | None = None  # the optional third factor
    known_abnormal: KnownAbnormal | None = None  # the optional fourth

    def metadata(self) -> dict[str, Any]:
        """The constants as recorded in the artifact (the bank itself lives in the graph)."""
        return (
            {
                "neighbours": self.neighbours,
                "rmse_weight": self.rmse_weight,
                "rmse_ref": self.rmse_ref,
                "distance_ref": self.distance_ref,
                "distance_floor": DISTANCE_FLOOR,
                "bank_size": int(self.bank.shape[0]),
                "code_size": int(self.bank.shape[1]),
                "neighbours_validation_roc_auc": self.selection,
            }
            | ({} if self.subspace is None else {"subspace": self.subspace.metadata()})
            | ({} if self.known_abnormal is None else {"known_abnormal": self.known_abnormal.metadata()})
        )


def choose_bank(count: int, size: int, seed: int) -> np.ndarray:
    """Which of ``count`` codes go into the bank: all, or a seeded random ``size`` of them, so that
    scoring costs the same whatever the size of the data."""
    if count <= size:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def own_rows(members: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """For codes ``members`` (indices into the codes the bank was chosen from): each one's row in the
    bank that keeps ``kept`` (from :func:`choose_bank`), or -1 when it is not in the bank."""
    rows = np.full(members.size, -1)
    position = np.searchsorted(kept, members)
    inside = (position < kept.size) & (kept[np.minimum(position, kept.size - 1)] == members)
    rows[inside] = position[inside]
    return rows


def rmse(errors: np.ndarray) -> np.ndarray:
    """Root-mean-square over samples of per-sample errors ``[N, L]`` (float32, as the graph)."""
    errors = np.asarray(errors, dtype=np.float32)
    return np.sqrt(np.mean(errors * errors, axis=1, dtype=np.float32))


# The graph ranks the bank by |a|² - 2ab + |b|² in float32, whose cancellation costs about 1e-6 of
# |a|² (measured: scores 1e-3 off for beats near a bank code), then recomputes exact distances to this
# many more candidates than it needs and keeps the nearest: a ranking error cannot reach the result.
EXTRA_CANDIDATES = 4


def knn_distance(
    codes: np.ndarray, bank: np.ndarray, neighbours: int, own_row: np.ndarray | None = None
) -> np.ndarray:
    """Mean Euclidean distance from each code ``[N, D]`` to its ``neighbours`` nearest rows of ``bank``.

    The reference for the graph's two-step computation: exact, in float64, returned as float32.
    ``own_row[i]`` (when given and not -1) is a bank row left out for code ``i``: the beat's own code,
    so that a beat in the bank is measured against the others (leave-one-out), as an unseen beat is.
    """
    a = np.asarray(codes, dtype=np.float64)
    b = np.asarray(bank, dtype=np.float64)
    squared = (a * a).sum(axis=1, keepdims=True) - 2 * a @ b.T + (b * b).sum(axis=1)[None, :]
    if own_row is not None:
        inside = np.flatnonzero(own_row >= 0)
        squared[inside, own_row[inside]] = np.inf
    nearest = np.sort(np.maximum(squared, 0), axis=1)[:, :neighbours]
    return np.mean(np.sqrt(nearest), axis=1).astype(np.float32)


def exponents(latent: LatentScore) -> tuple[np.float32, np.float32, np.float32]:
    """The weights of the error, the distance and the subspace residual (summing to 1)."""
    p = 0.0 if latent.subspace is None else latent.subspace.weight
    w = latent.rmse_weight
    return np.float32(w * (1 - p)), np.float32((1 - w) * (1 - p)), np.float32(p)


def fuse(
    rmse_values: np.ndarray,
    distances: np.ndarray,
    latent: LatentScore,
    normalised: np.ndarray | None = None,
    abnormal_ratio: np.ndarray | None = None,
) -> np.ndarray:
    """The fused score (see the module docstring); ``normalised`` beats are needed with a subspace,
    ``abnormal_ratio`` (:meth:`KnownAbnormal.ratio`) with known abnormal beats."""
    w_error, w_distance, w_residual = exponents(latent)
    ratio_error = np.asarray(rmse_values, np.float32) / np.float32(latent.rmse_ref)
    ratio_distance = np.maximum(
        np.asarray(distances, np.float32) / np.float32(latent.distance_ref), np.float32(DISTANCE_FLOOR)
    )
    score = np.float32(latent.rmse_ref) * ratio_error**w_error * ratio_distance**w_distance
    if latent.subspace is not None:
        if normalised is None:
            raise ValueError("a fused score with a subspace needs the normalised beats")
        ratio_residual = latent.subspace.residual(normalised) / np.float32(latent.subspace.reference)
        score = score * ratio_residual**w_residual
    if latent.known_abnormal is not None:
        if abnormal_ratio is None:
            raise ValueError("a fused score with known abnormal beats needs their distance ratio")
        score = score / np.asarray(abnormal_ratio, np.float32) ** np.float32(latent.known_abnormal.weight)
    return score


@dataclass(frozen=True)
class Beats:
    """What the fusion needs of some beats: their per-sample errors and their codes."""

    errors: np.ndarray  # [N, L]
    codes: np.ndarray  # [N, D]
    own_row: np.ndarray | None = None  # their rows in the bank, -1 when not in it (see knn_distance)
    normalised: np.ndarray | None = None  # [N, L]: the beats themselves, for a subspace
    abnormal_row: np.ndarray | None = None  # their rows in the known-abnormal bank, -1 when not in it

    def scores(self, latent: LatentScore) -> np.ndarray:
        distance = knn_distance(self.codes, latent.bank, latent.neighbours, self.own_row)
        known = latent.known_abnormal
        ratio = None if known is None else known.ratio(self.codes, self.abnormal_row)
        return fuse(rmse(self.errors), distance, latent, self.normalised, ratio)


def select(
    bank: np.ndarray,
    held_out: Beats,
    abnormal: Beats,
    choices: tuple[int, ...],
    rmse_weight: float,
    subspace: Subspace | None = None,
    known_abnormal: KnownAbnormal | None = None,
) -> LatentScore:
    """The k (of ``choices``) whose fused score separates held-out normal from abnormal training-split
    beats best (ROC AUC; a tie goes to the larger k, which one mislabelled bank beat sways less), with
    every candidate's AUC recorded. On ECG5000, k = 1 did best with a few hundred normal beats and
    k = 2 with thousands, a few of them mislabelled (docs/model-quality.md)."""
    aucs: dict[str, float] = {}
    best: LatentScore | None = None
    for k in sorted(choices):
        candidate = calibrate(bank, held_out, k, rmse_weight, subspace, known_abnormal)
        scores = np.concatenate([held_out.scores(candidate), abnormal.scores(candidate)])
        labels = np.arange(scores.size) >= held_out.codes.shape[0]
        aucs[str(k)] = roc_auc(curves(scores, labels))
        if best is None or aucs[str(k)] >= aucs[str(best.neighbours)]:
            best = candidate
    assert best is not None
    return dataclasses.replace(best, selection=aucs)


def calibrate(
    bank: np.ndarray,
    held_out: Beats,
    neighbours: int,
    rmse_weight: float,
    subspace: Subspace | None = None,
    known_abnormal: KnownAbnormal | None = None,
) -> LatentScore:
    """The fusion constants from held-out normal beats: their errors come from a model that did not
    train on them, their distances leave their own codes out, and the subspace did not fit them (nor
    are they in the known-abnormal bank)."""
    reference_rmse = float(np.median(rmse(held_out.errors)))
    reference_distance = float(np.median(knn_distance(held_out.codes, bank, neighbours, held_out.own_row)))
    if not (reference_rmse > 0 and reference_distance > 0):
        raise TrainingError(
            "more than half of the held-out normal beats are reconstructed exactly or duplicate a training "
            "beat: the score cannot be calibrated (are rows repeated in the data?)"
        )
    if subspace is not None:
        if held_out.normalised is None:
            raise ValueError("calibrating a subspace needs the held-out beats themselves")
        reference_residual = float(np.median(subspace.residual(held_out.normalised)))
        if not reference_residual > 0:
            raise TrainingError(
                "more than half of the held-out normal beats lie exactly in the normal beats' principal "
                "subspace: the score cannot be calibrated (are rows repeated in the data?)"
            )
        subspace = dataclasses.replace(subspace, reference=reference_residual)
    if known_abnormal is not None:
        reference_abnormal = float(np.median(knn_distance(held_out.codes, known_abnormal.bank, 1)))
        if not reference_abnormal > 0:
            raise TrainingError(
                "more than half of the held-out normal beats duplicate an abnormal training beat: the "
                "score cannot be calibrated (are rows labelled both normal and abnormal?)"
            )
        known_abnormal = dataclasses.replace(known_abnormal, reference=reference_abnormal)
    return LatentScore(
        bank,
        neighbours,
        rmse_weight,
        reference_rmse,
        reference_distance,
        subspace=subspace,
        known_abnormal=known_abnormal,
    )
