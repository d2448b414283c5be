"""A real, small model artifact for tests, made by the trainer's own code path.

``build_small_artifact`` trains the ``tiny`` preset on ECG5000 (a few seconds
after TensorFlow is imported) and exports it exactly as ``ecg-anomaly train``
does: valid metadata, parity-checked ONNX, atomic write. The first call in a
process trains; later calls copy that artifact, so many tests can share it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ecg_anomaly.schemas.datasets import load_dataset, split_train_test
from ecg_anomaly.trainer.presets import PRESETS
from ecg_anomaly.trainer.train import SplitSettings

SEED = 7
_built: list[Path] = []


def build_small_artifact(out_dir: Path) -> Path:
    """Write ``out_dir/model.onnx`` (and ``model.keras``, ``metrics.json``) and return the ONNX path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not _built:
        from ecg_anomaly.trainer.train import train

        cache = Path(tempfile.mkdtemp(prefix="ecg-small-artifact-"))
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        result = train(
            PRESETS["tiny"],
            load_dataset(),
            cache,
            seed=SEED,
            model_version="test-tiny",
            quiet=True,
            report=False,
        )
        _built.append(result.artifact.parent)
    for name in ("model.onnx", "model.keras", "metrics.json"):
        shutil.copyfile(_built[0] / name, out_dir / name)
    return out_dir / "model.onnx"


def load_test_split() -> tuple[np.ndarray, np.ndarray]:
    """The test split the artifact was evaluated on (the tutorial's: 1,000 of ECG5000's 5,000 beats).

    Returns ``(beats, labels)``: beats float32 ``[N, 140]`` of raw values, and
    labels int8 ``[N]`` with **1 = abnormal** (ECG5000 classes 2-5) and 0 = normal.
    """
    split = SplitSettings()
    _, test = split_train_test(load_dataset(), split.test_size, split.random_state)
    return test.beats, test.is_anomaly.astype(np.int8)
