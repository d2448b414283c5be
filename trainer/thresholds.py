"""Threshold policies: pure numpy, so they are easy to test with known answers.

A beat is an anomaly when its score is strictly greater than the threshold.
Every policy takes reconstruction errors from the *training* split only (training
normals, or a validation part of the training split); the test split never
reaches this module during training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecg_anomaly.trainer.errors import ThresholdError

POLICIES = ("mean_std", "percentile", "false_alarm_rate", "max_f1")


@dataclass(frozen=True)
class Threshold:
    value: float
    policy: str
    params: dict[str, Any] = field(default_factory=dict)


def mean_std(normal_errors: np.ndarray, k: float = 1.0) -> Threshold:
    """``mean + k * std`` of normal errors (the tutorial: k = 1, population std)."""
    errors = _check(normal_errors, "mean_std")
    value = float(np.mean(errors) + k * np.std(errors))
    return Threshold(value, "mean_std", {"k": k, "n": int(errors.size)})


def percentile(normal_errors: np.ndarray, q: float = 99.0) -> Threshold:
    """The ``q``-th percentile (linear interpolation) of normal errors."""
    if not 0.0 < q <= 100.0:
        raise ThresholdError(f"percentile: q must be in (0, 100], got {q}")
    errors = _check(normal_errors, "percentile")
    return Threshold(float(np.percentile(errors, q)), "percentile", {"q": q, "n": int(errors.size)})


def false_alarm_rate(normal_errors: np.ndarray, rate: float = 0.01) -> Threshold:
    """The lowest threshold that flags at most ``rate`` of the normal beats given.

    With n errors, at most ``floor(rate * n)`` of them lie strictly above it.
    """
    if not 0.0 <= rate < 1.0:
        raise ThresholdError(f"false_alarm_rate: rate must be in [0, 1), got {rate}")
    errors = np.sort(_check(normal_errors, "false_alarm_rate"))
    allowed = int(np.floor(rate * errors.size))
    value = float(errors[errors.size - 1 - allowed])
    achieved = float(np.mean(errors > value))
    return Threshold(
        value, "false_alarm_rate", {"rate": rate, "achieved_rate": achieved, "n": int(errors.size)}
    )


def max_f1(errors: np.ndarray, is_anomaly: np.ndarray) -> Threshold:
    """The threshold with the best F1 (anomaly positive) on labelled errors.

    The value sits halfway between the highest error still called normal and
    the next higher error, so it does not hug one validation beat.
    """
    errors = _check(errors, "max_f1")
    labels = np.asarray(is_anomaly, dtype=bool)
    if labels.shape != errors.shape:
        raise ThresholdError("max_f1: errors and labels differ in length")
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        raise ThresholdError("max_f1 needs labelled validation data with both normal and abnormal beats")
    order = np.argsort(-errors, kind="stable")
    ranked, ranked_labels = errors[order], labels[order]
    true_pos = np.cumsum(ranked_labels)
    flagged = np.arange(1, ranked.size + 1)
    # Only cut between distinct values: flagging the top i beats must flag all ties.
    cut = np.append(ranked[:-1] != ranked[1:], True)
    f1 = np.where(cut, 2 * true_pos / (flagged + positives), -1.0)
    best = int(np.argmax(f1))
    if best + 1 < ranked.size:
        value = float((ranked[best] + ranked[best + 1]) / 2)
    else:
        value = float(np.nextafter(ranked[best], -np.inf))
    return Threshold(
        value,
        "max_f1",
        {"validation_f1": float(f1[best]), "n": int(errors.size), "n_anomalies": positives},
    )


def _check(errors: np.ndarray, policy: str) -> np.ndarray:
    array = np.asarray(errors, dtype=np.float64).ravel()
    if array.size == 0:
        raise ThresholdError(f"{policy}: no errors to choose a threshold from")
    if not np.all(np.isfinite(array)):
        raise ThresholdError(f"{policy}: errors contain NaN or infinity")
    return array
