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

POLICIES = ("mean_std", "percentile", "false_alarm_rate", "max_f1", "smoothed_f1")
# Policies that need abnormal beats (labelled errors), not just normal ones.
LABELLED_POLICIES = ("max_f1", "smoothed_f1")


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
    errors, labels = _labelled(errors, is_anomaly, "max_f1")
    value, f1 = _best_f1(errors, labels, normal_weight=1.0)
    return Threshold(
        value,
        "max_f1",
        {"validation_f1": f1, "n": int(errors.size), "n_anomalies": int(labels.sum())},
    )


def smoothed_f1(
    errors: np.ndarray,
    is_anomaly: np.ndarray,
    normal_weight: float = 1.0,
    resamples: int = 100,
    seed: int = 0,
) -> Threshold:
    """The threshold with the best F1 under kernel-smoothed class distributions, and its uncertainty.

    The plain best-F1 cut sits between two particular beats, so on a few hundred beats it
    jumps with the sample. Here each class's error distribution is smoothed with a logistic
    kernel on the log errors (bandwidth by Silverman's rule) and F1 is maximised on the smooth
    curves: on two overlapping classes of 30 beats this halves the threshold's variance across
    samples, where bagging the plain cut barely moves it. The uncertainty is the spread of the
    same estimate over bootstrap resamples (normal and abnormal beats resampled separately):
    standard deviation and central 90 % interval. ``normal_weight`` counts each normal beat
    that many times, so that a sample holding a share of the normals (a held-out part) is
    scored at the data's class balance.
    """
    errors, labels = _labelled(errors, is_anomaly, "smoothed_f1")
    if not (np.isfinite(normal_weight) and normal_weight > 0):
        raise ThresholdError(f"smoothed_f1: normal_weight must be a positive number, got {normal_weight}")
    if resamples < 1:
        raise ThresholdError(f"smoothed_f1: resamples must be at least 1, got {resamples}")
    positive = errors[errors > 0]
    logs = np.log(np.maximum(errors, positive.min() if positive.size else 1e-30))
    normal, abnormal = logs[~labels], logs[labels]
    grid = np.linspace(logs.min(), logs.max(), _GRID)
    value = float(np.exp(_smoothed_best(grid, normal, abnormal, normal_weight)))
    rng = np.random.default_rng(seed)
    values = np.exp(
        [
            _smoothed_best(
                grid, rng.choice(normal, normal.size), rng.choice(abnormal, abnormal.size), normal_weight
            )
            for _ in range(resamples)
        ]
    )
    low, high = (float(v) for v in np.percentile(values, (5, 95)))
    return Threshold(
        value,
        "smoothed_f1",
        {
            "f1": _f1_at(errors, labels, value, normal_weight),
            "std": float(np.std(values)),
            "interval_90": [low, high],
            "resamples": resamples,
            "normal_weight": normal_weight,
            "n_normal": int(normal.size),
            "n_abnormal": int(abnormal.size),
        },
    )


_GRID = 1024  # candidate cuts, evenly spaced in log error between the smallest and largest


def _smoothed_best(grid: np.ndarray, normal: np.ndarray, abnormal: np.ndarray, normal_weight: float) -> float:
    """The grid point (a log error) with the best F1 when each beat counts as a logistic bump."""
    flagged_normal = normal_weight * _flagged(grid, normal).sum(axis=1)
    flagged_abnormal = _flagged(grid, abnormal).sum(axis=1)
    f1 = 2 * flagged_abnormal / (flagged_abnormal + flagged_normal + abnormal.size)
    return float(grid[int(np.argmax(f1))])


def _flagged(grid: np.ndarray, logs: np.ndarray) -> np.ndarray:
    """``[cut, beat]``: the smoothed share of each beat above each cut (a logistic kernel)."""
    spread = min(np.std(logs), (np.percentile(logs, 75) - np.percentile(logs, 25)) / 1.34)
    bandwidth = 1.06 * spread * logs.size**-0.2 if spread > 0 else 1e-6  # Silverman's rule of thumb
    scale = bandwidth * np.sqrt(3) / np.pi  # the logistic kernel with the Gaussian's variance
    with np.errstate(over="ignore"):  # far from a beat the kernel is exactly 0 or 1
        return 1.0 / (1.0 + np.exp((grid[:, None] - logs[None, :]) / scale))


def _labelled(errors: np.ndarray, is_anomaly: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    checked = _check(errors, policy)
    labels = np.asarray(is_anomaly, dtype=bool).ravel()
    if labels.shape != checked.shape:
        raise ThresholdError(f"{policy}: errors and labels differ in length")
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        raise ThresholdError(f"{policy} needs labelled validation data with both normal and abnormal beats")
    return checked, labels


def _best_f1(errors: np.ndarray, labels: np.ndarray, normal_weight: float) -> tuple[float, float]:
    """(threshold, F1) of the cut with the best F1, normals counted ``normal_weight`` times each."""
    order = np.argsort(-errors, kind="stable")
    ranked, ranked_labels = errors[order], labels[order]
    true_pos = np.cumsum(ranked_labels)
    false_pos = normal_weight * np.cumsum(~ranked_labels)
    positives = int(labels.sum())
    # Only cut between distinct values: flagging the top i beats must flag all ties.
    cut = np.append(ranked[:-1] != ranked[1:], True)
    f1 = np.where(cut, 2 * true_pos / (true_pos + false_pos + positives), -1.0)
    best = int(np.argmax(f1))
    if best + 1 < ranked.size:
        value = float((ranked[best] + ranked[best + 1]) / 2)
    else:
        value = float(np.nextafter(ranked[best], -np.inf))
    return value, float(f1[best])


def _f1_at(errors: np.ndarray, labels: np.ndarray, threshold: float, normal_weight: float) -> float:
    flagged = errors > threshold
    true_pos = float(np.sum(flagged & labels))
    false_pos = normal_weight * float(np.sum(flagged & ~labels))
    return 2 * true_pos / (true_pos + false_pos + float(labels.sum()))


def _check(errors: np.ndarray, policy: str) -> np.ndarray:
    array = np.asarray(errors, dtype=np.float64).ravel()
    if array.size == 0:
        raise ThresholdError(f"{policy}: no errors to choose a threshold from")
    if not np.all(np.isfinite(array)):
        raise ThresholdError(f"{policy}: errors contain NaN or infinity")
    return array
