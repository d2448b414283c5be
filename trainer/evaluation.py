"""Test-split metrics from scores, labels and a threshold: pure numpy (no scikit-learn, no TensorFlow).

Two conventions side by side: ``anomaly_positive`` (the one that matters for
alerting) and ``normal_positive`` (the tutorial's: it calls a beat positive when
its loss is below the threshold, i.e. normal).

A metric that the data cannot define is ``None`` (JSON ``null``, printed "n/a"), never a
made-up 0: ROC and PR AUC need both classes, precision needs a flagged beat, recall a
positive one, F1 both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ABNORMAL_CLASSES = (2, 3, 4, 5)  # ECG5000: R-on-T PVC, PVC, SP or EB, unclassified beat


@dataclass(frozen=True)
class Curves:
    """ROC and precision-recall curves, for the report."""

    fpr: np.ndarray
    tpr: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def curves(scores: np.ndarray, is_anomaly: np.ndarray) -> Curves:
    """ROC and PR points at every distinct score (anomaly positive, higher score = more anomalous)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(is_anomaly, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    ranked, ranked_labels = scores[order], labels[order]
    last_of_tie = np.append(ranked[:-1] != ranked[1:], True)
    true_pos = np.cumsum(ranked_labels)[last_of_tie].astype(np.float64)
    false_pos = np.cumsum(~ranked_labels)[last_of_tie].astype(np.float64)
    positives, negatives = max(labels.sum(), 1), max((~labels).sum(), 1)
    tpr = np.concatenate([[0.0], true_pos / positives])
    fpr = np.concatenate([[0.0], false_pos / negatives])
    precision = np.concatenate([[1.0], true_pos / (true_pos + false_pos)])
    return Curves(fpr=fpr, tpr=tpr, precision=precision, recall=tpr)


def roc_auc(c: Curves) -> float:
    """Area under the ROC curve (trapezoids; ties count half, as scikit-learn)."""
    return float(np.sum(np.diff(c.fpr) * (c.tpr[1:] + c.tpr[:-1]) / 2))


def average_precision(c: Curves) -> float:
    """PR AUC as average precision: sum over thresholds of (R_n - R_{n-1}) * P_n (scikit-learn's)."""
    return float(np.sum(np.diff(c.recall) * c.precision[1:]))


def classification(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | None]:
    """Accuracy, precision, recall and F1 of ``predicted`` against ``actual`` (both bool, True positive).

    Precision with nothing predicted positive, recall with no actual positive, and F1 without
    both are undefined: ``None``.
    """
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float(np.mean(predicted == actual)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def evaluate(
    scores: np.ndarray,
    is_anomaly: np.ndarray,
    threshold: float,
    classes: np.ndarray | None = None,
) -> dict[str, Any]:
    """All test metrics as a JSON-ready dict (``metrics.json`` and the artifact's ``metrics``)."""
    scores = np.asarray(scores, dtype=np.float64)
    actual = np.asarray(is_anomaly, dtype=bool)
    flagged = scores > threshold
    c = curves(scores, actual)
    both_classes = bool(actual.any() and (~actual).any())
    metrics: dict[str, Any] = {
        "n": int(actual.size),
        "n_anomalies": int(actual.sum()),
        "threshold": float(threshold),
        "anomaly_positive": classification(flagged, actual),
        "normal_positive": classification(~flagged, ~actual),
        "roc_auc": roc_auc(c) if both_classes else None,
        "pr_auc": average_precision(c) if both_classes else None,
        "confusion_matrix": {
            "labels": ["normal", "anomaly"],
            "rows_actual_columns_predicted": [
                [int(np.sum(~actual & ~flagged)), int(np.sum(~actual & flagged))],
                [int(np.sum(actual & ~flagged)), int(np.sum(actual & flagged))],
            ],
        },
    }
    if classes is not None:
        metrics["recall_by_class"] = {
            str(k): {"n": int(np.sum(classes == k)), "recall": float(np.mean(flagged[classes == k]))}
            for k in ABNORMAL_CLASSES
            if np.any(classes == k)
        }
    return metrics


def number(value: float | None, digits: int = 4) -> str:
    """A metric for people: fixed digits, or "n/a" when the data leaves it undefined."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(metrics: dict[str, Any]) -> str:
    """A plain-text table of the headline metrics for the terminal."""
    a, n = metrics["anomaly_positive"], metrics["normal_positive"]
    cm = metrics["confusion_matrix"]["rows_actual_columns_predicted"]
    lines = [
        f"beats {metrics['n']} ({metrics['n_anomalies']} abnormal), threshold {metrics['threshold']:.6g}",
        f"{'':22}{'accuracy':>10}{'precision':>11}{'recall':>9}{'F1':>8}",
        *(
            f"{name:22}{number(m['accuracy']):>10}{number(m['precision']):>11}"
            f"{number(m['recall']):>9}{number(m['f1']):>8}"
            for name, m in (("anomaly positive", a), ("normal positive (tut.)", n))
        ),
        f"ROC AUC {number(metrics['roc_auc'])}   PR AUC (average precision) {number(metrics['pr_auc'])}",
        f"confusion (rows actual, columns predicted normal/anomaly): normal {cm[0]}, anomaly {cm[1]}",
    ]
    if "recall_by_class" in metrics:
        per_class = ", ".join(
            f"class {k}: {number(v['recall'], 3)} (n={v['n']})" for k, v in metrics["recall_by_class"].items()
        )
        lines.append(f"recall by abnormal class: {per_class}")
    if "training_time_s" in metrics:
        lines.append(f"training time {metrics['training_time_s']:.1f} s")
    return "\n".join(lines)
