"""Threshold policies on synthetic errors with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ecg_anomaly.trainer import thresholds
from ecg_anomaly.trainer.errors import ThresholdError

ONE_TO_HUNDRED = np.arange(1, 101, dtype=np.float64)


def test_mean_std() -> None:
    errors = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, population std sqrt(2)
    assert thresholds.mean_std(errors).value == pytest.approx(3 + math.sqrt(2))
    chosen = thresholds.mean_std(errors, k=2.5)
    assert chosen.value == pytest.approx(3 + 2.5 * math.sqrt(2))
    assert chosen.policy == "mean_std" and chosen.params["k"] == 2.5


def test_percentile() -> None:
    assert thresholds.percentile(ONE_TO_HUNDRED, q=90).value == pytest.approx(90.1)  # 1 + 0.9 * 99
    assert thresholds.percentile(ONE_TO_HUNDRED, q=100).value == 100
    with pytest.raises(ThresholdError, match="q must be"):
        thresholds.percentile(ONE_TO_HUNDRED, q=0)


@pytest.mark.parametrize(
    ("rate", "value", "achieved"), [(0.05, 95, 0.05), (0.049, 96, 0.04), (0.0, 100, 0.0)]
)
def test_false_alarm_rate(rate: float, value: float, achieved: float) -> None:
    shuffled = np.random.default_rng(0).permutation(ONE_TO_HUNDRED)
    chosen = thresholds.false_alarm_rate(shuffled, rate=rate)
    assert chosen.value == value
    assert chosen.params["achieved_rate"] == pytest.approx(achieved)
    assert np.mean(shuffled > chosen.value) <= rate


def test_max_f1_separable_sits_in_the_gap() -> None:
    errors = np.array([0.1, 0.5, 0.2, 0.6, 0.3])
    labels = np.array([False, True, False, True, False])
    chosen = thresholds.max_f1(errors, labels)
    assert chosen.value == pytest.approx(0.4)
    assert chosen.params["validation_f1"] == 1.0


def test_max_f1_with_overlap() -> None:
    # normals 1..4, anomalies 3.5, 5, 6: flagging {6, 5, 4, 3.5} gives F1 = 6/7, the best.
    errors = np.array([1.0, 2.0, 3.0, 4.0, 3.5, 5.0, 6.0])
    labels = np.array([False] * 4 + [True] * 3)
    chosen = thresholds.max_f1(errors, labels)
    assert chosen.value == pytest.approx(3.25)
    assert chosen.params["validation_f1"] == pytest.approx(6 / 7)


def test_max_f1_never_splits_ties() -> None:
    errors = np.array([1.0, 2.0, 2.0, 3.0])
    labels = np.array([False, False, True, True])
    # Flagging {3, 2, 2} (F1 0.8) beats {3} (0.67) and all four (0.67); the tie stays together.
    assert thresholds.max_f1(errors, labels).value == pytest.approx(1.5)


def test_max_f1_needs_both_classes() -> None:
    with pytest.raises(ThresholdError, match="both normal and abnormal"):
        thresholds.max_f1(np.array([1.0, 2.0]), np.array([False, False]))


@pytest.mark.parametrize("errors", [np.array([]), np.array([1.0, np.nan]), np.array([np.inf])])
def test_bad_errors_are_refused(errors: np.ndarray) -> None:
    with pytest.raises(ThresholdError):
        thresholds.mean_std(errors)


def test_smoothed_f1_separable_sits_in_the_gap() -> None:
    errors = np.concatenate([np.linspace(0.1, 0.15, 20), np.linspace(0.6, 0.8, 20)])
    labels = np.arange(40) >= 20
    chosen = thresholds.smoothed_f1(errors, labels, resamples=50)
    assert 0.15 < chosen.value < 0.6
    low, high = chosen.params["interval_90"]
    assert 0.15 < low <= high < 0.6 and chosen.params["std"] > 0
    assert chosen.params["f1"] == 1.0
    assert (chosen.params["n_normal"], chosen.params["n_abnormal"]) == (20, 20)


def test_smoothed_f1_is_steadier_than_max_f1() -> None:
    """Two overlapping classes, 30 beats each, 100 draws: the smoothed cut varies far less than the plain."""
    rng = np.random.default_rng(1)
    plain, smoothed = [], []
    for _ in range(100):
        errors = np.exp(np.concatenate([rng.normal(0.0, 0.3, 30), rng.normal(1.0, 0.3, 30)]))
        labels = np.arange(60) >= 30
        plain.append(np.log(thresholds.max_f1(errors, labels).value))
        smoothed.append(np.log(thresholds.smoothed_f1(errors, labels, resamples=1).value))
    assert np.std(smoothed) < 0.75 * np.std(plain)
    assert abs(np.median(smoothed) - 0.5) < 0.1  # near the Bayes cut of two equal-variance classes


def test_smoothed_f1_weights_normals_to_the_datas_balance() -> None:
    """A held-out fifth of the normals, each counted five times, stands for all of them: fewer false
    alarms are worth more, so the cut moves up."""
    rng = np.random.default_rng(2)
    errors = np.exp(np.concatenate([rng.normal(0.0, 0.4, 40), rng.normal(1.0, 0.4, 40)]))
    labels = np.arange(80) >= 40
    unweighted = thresholds.smoothed_f1(errors, labels, resamples=1)
    weighted = thresholds.smoothed_f1(errors, labels, normal_weight=5.0, resamples=1)
    assert weighted.params["normal_weight"] == 5.0
    assert weighted.value > unweighted.value * 1.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"normal_weight": 0.0}, "normal_weight"), ({"resamples": 0}, "resamples")],
)
def test_smoothed_f1_refuses_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ThresholdError, match=message):
        thresholds.smoothed_f1(np.array([1.0, 2.0]), np.array([False, True]), **kwargs)


def test_smoothed_f1_takes_zero_errors() -> None:
    """A beat identical to a training beat can score 0; the log scale must not turn that into -inf."""
    chosen = thresholds.smoothed_f1(np.array([0.0, 0.1, 0.2, 1.0, 2.0]), np.array([0, 0, 0, 1, 1], bool))
    assert 0.2 < chosen.value < 1.0
