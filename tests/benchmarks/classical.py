"""Classical reference detectors, fitted the way the trainer fits its model, for the model-quality benchmark.

Each one learns from the training split's normal beats only and scores beats by how far they are
from them: the mean distance to the k nearest training normals, a one-class SVM (RBF kernel), and
the squared reconstruction error of a PCA projection. A fourth learns from the training split's
abnormal beats too, as the default preset's known-abnormal factor does: the distance to the nearest
training normal against the distance to the nearest training abnormal beat (a nearest-neighbour
classifier's ratio, made a score). Their hyperparameters are chosen by
stratified k-fold cross-validation on the training split (fit on the normals of the other folds,
ROC AUC on the held-out fold's normal and abnormal beats), so, like the trainer, they never see
the test split before they are scored on it. scikit-learn is a test dependency only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import NearestNeighbors
from sklearn.svm import OneClassSVM

FOLDS = 5

Scorer = Callable[[np.ndarray], np.ndarray]  # beats [N, L] -> scores [N], higher = more anomalous


def knn(normals: np.ndarray, k: int) -> Scorer:
    """Mean Euclidean distance to the ``k`` nearest training normals."""
    index = NearestNeighbors(n_neighbors=k).fit(normals)
    return lambda beats: index.kneighbors(beats)[0].mean(axis=1)


def one_class_svm(normals: np.ndarray, nu: float, gamma_factor: float) -> Scorer:
    """A one-class SVM, RBF kernel; gamma is ``gamma_factor`` times scikit-learn's "scale"."""
    gamma = gamma_factor / (normals.shape[1] * normals.var())
    model = OneClassSVM(nu=nu, gamma=gamma).fit(normals)
    return lambda beats: -model.decision_function(beats)


def pca(normals: np.ndarray, components: int) -> Scorer:
    """Mean squared error of the reconstruction from the first ``components`` principal components."""
    model = PCA(n_components=components).fit(normals)
    return lambda beats: np.mean((model.inverse_transform(model.transform(beats)) - beats) ** 2, axis=1)


def nearest_ratio(normals: np.ndarray, abnormals: np.ndarray, q: float) -> Scorer:
    """``(1 - q) log d_normal - q log d_abnormal``: the distances to the nearest training normal and to
    the nearest training abnormal beat, weighted as the known-abnormal factor weighs its distance."""
    near_normal = NearestNeighbors(n_neighbors=1).fit(normals)
    near_abnormal = NearestNeighbors(n_neighbors=1).fit(abnormals)

    def score(beats: np.ndarray) -> np.ndarray:
        d_normal = np.maximum(near_normal.kneighbors(beats)[0][:, 0], 1e-12)
        d_abnormal = np.maximum(near_abnormal.kneighbors(beats)[0][:, 0], 1e-12)
        return np.asarray((1 - q) * np.log(d_normal) - q * np.log(d_abnormal))

    return score


@dataclass(frozen=True)
class Family:
    name: str
    fit: Callable[..., Scorer]
    grid: tuple[dict[str, Any], ...]
    labelled: bool = False  # fitted on the abnormal beats too (``fit(normals, abnormals, **params)``)

    def fitted(self, beats: np.ndarray, is_anomaly: np.ndarray, params: dict[str, Any]) -> Scorer:
        if self.labelled:
            return self.fit(beats[~is_anomaly], beats[is_anomaly], **params)
        return self.fit(beats[~is_anomaly], **params)

    def label(self, params: dict[str, Any]) -> str:
        return f"{self.name} ({', '.join(f'{k}={v:g}' for k, v in params.items())})"


FAMILIES = (
    Family("k nearest normals", knn, tuple({"k": k} for k in (1, 2, 3, 5, 10, 20))),
    Family(
        "one-class SVM",
        one_class_svm,
        tuple({"nu": nu, "gamma_factor": g} for nu in (0.01, 0.05, 0.1, 0.2) for g in (0.3, 1.0, 3.0, 10.0)),
    ),
    Family("PCA reconstruction", pca, tuple({"components": c} for c in (1, 2, 3, 5, 10, 20))),
    Family(
        "nearest normal vs nearest abnormal",
        nearest_ratio,
        tuple({"q": q} for q in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)),
        labelled=True,
    ),
)


@dataclass(frozen=True)
class Reference:
    """One fitted reference detector: its chosen hyperparameters, their CV score, test scores, fit time."""

    family: str
    label: str
    params: dict[str, Any]
    cv_roc_auc: float
    scores: np.ndarray
    fit_seconds: float
    labelled: bool  # learnt from the training split's abnormal beats too


def cross_validated_auc(
    family: Family, params: dict[str, Any], beats: np.ndarray, is_anomaly: np.ndarray, seed: int
) -> float:
    """Mean held-out ROC AUC over stratified folds of the training split."""
    aucs = []
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for fit_rows, held_rows in folds.split(beats, is_anomaly):
        if "k" in params and params["k"] > int((~is_anomaly[fit_rows]).sum()):
            return float("nan")
        scorer = family.fitted(beats[fit_rows], is_anomaly[fit_rows], params)
        aucs.append(roc_auc_score(is_anomaly[held_rows], scorer(beats[held_rows])))
    return float(np.mean(aucs))


def fit_reference(
    family: Family, beats: np.ndarray, is_anomaly: np.ndarray, test_beats: np.ndarray, seed: int
) -> Reference:
    """Choose hyperparameters by CV on the training split, refit on all its normals, score the test beats."""
    results = [
        (cross_validated_auc(family, p, beats, is_anomaly, seed), i) for i, p in enumerate(family.grid)
    ]
    auc, best = max((r for r in results if np.isfinite(r[0])), key=lambda r: (r[0], -r[1]))
    params = family.grid[best]
    started = time.perf_counter()
    scorer = family.fitted(beats, is_anomaly, params)
    fit_seconds = time.perf_counter() - started
    return Reference(
        family.name, family.label(params), params, auc, scorer(test_beats), fit_seconds, family.labelled
    )


def fit_references(
    beats: np.ndarray, is_anomaly: np.ndarray, test_beats: np.ndarray, seed: int
) -> list[Reference]:
    """Every family, each with its cross-validated hyperparameters."""
    return [fit_reference(f, beats, is_anomaly, test_beats, seed) for f in FAMILIES]
