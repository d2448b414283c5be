"""The README's model-quality claims, re-measured. Slow (minutes): run with ``pytest -m slow``."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecg_anomaly.schemas.datasets import load_dataset
from ecg_anomaly.trainer.presets import PRESETS
from ecg_anomaly.trainer.train import train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # Keras 3.15
]

# The TensorFlow tutorial's published figures (normal beats are the positive class).
TUTORIAL = {"accuracy": 0.943, "precision": 0.992, "recall": 0.905}


def test_tutorial_preset_reproduces_the_tutorial(tmp_path: Path) -> None:
    result = train(PRESETS["tutorial"], load_dataset(), tmp_path, seed=1, quiet=True, report=False)
    for key, published in TUTORIAL.items():
        assert result.metrics["normal_positive"][key] == pytest.approx(published, abs=0.015), key


def test_default_preset_meets_its_goal(tmp_path: Path) -> None:
    result = train(PRESETS["default"], load_dataset(), tmp_path, seed=1, quiet=True, report=False)
    assert result.metrics["roc_auc"] >= 0.995
    assert result.metrics["anomaly_positive"]["accuracy"] >= 0.975
