"""Metrics: known answers, and agreement with scikit-learn (which the trainer does not need at run time)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ecg_anomaly.trainer.evaluation import average_precision, curves, evaluate, format_table, roc_auc


def test_known_confusion_and_both_conventions() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.25])
    is_anomaly = np.array([False, False, False, True, True, True, True])
    classes = np.array([1, 1, 1, 2, 2, 4, 3])
    m = evaluate(scores, is_anomaly, threshold=0.5, classes=classes)
    assert m["confusion_matrix"]["rows_actual_columns_predicted"] == [[3, 0], [1, 3]]
    assert m["anomaly_positive"] == pytest.approx(
        {"accuracy": 6 / 7, "precision": 1.0, "recall": 0.75, "f1": 6 / 7}
    )
    assert m["normal_positive"]["precision"] == pytest.approx(0.75)
    assert m["normal_positive"]["recall"] == 1.0
    assert m["recall_by_class"] == {
        "2": {"n": 2, "recall": 1.0},
        "3": {"n": 1, "recall": 0.0},
        "4": {"n": 1, "recall": 1.0},
    }
    assert "ROC AUC" in format_table(m)


def test_auc_and_average_precision_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(500) < 0.4
    scores = np.round(rng.normal(labels * 1.0, 1.0), 1)  # rounding makes ties
    c = curves(scores, labels)
    assert roc_auc(c) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(c) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_perfect_separation() -> None:
    m = evaluate(np.array([0.1, 0.2, 0.9]), np.array([False, False, True]), threshold=0.5)
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0


def test_undefined_metrics_are_none_and_print_as_n_a() -> None:
    """One class only, or nothing flagged: AUCs, precision, recall or F1 cannot be computed, not 0.0."""
    only_abnormal = evaluate(np.array([0.1, 0.9]), np.array([True, True]), threshold=0.5)
    assert only_abnormal["roc_auc"] is None and only_abnormal["pr_auc"] is None
    assert only_abnormal["anomaly_positive"] == {
        "accuracy": 0.5,
        "precision": 1.0,
        "recall": 0.5,
        "f1": 2 / 3,
    }
    assert (
        only_abnormal["normal_positive"]["recall"] is None and only_abnormal["normal_positive"]["f1"] is None
    )
    nothing_flagged = evaluate(np.array([0.1, 0.2, 0.3]), np.array([False, False, True]), threshold=0.5)
    assert nothing_flagged["anomaly_positive"]["precision"] is None
    assert nothing_flagged["roc_auc"] == 1.0
    table = format_table(only_abnormal)
    assert "ROC AUC n/a   PR AUC (average precision) n/a" in table
    assert "0.5000" in table and "nan" not in table.lower()
