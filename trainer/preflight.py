"""Checks that run before training starts, so a mistake costs seconds, not a whole training run.

Every check here needs numpy only (TensorFlow is not imported yet). A failure is a
:class:`~ecg_anomaly.base.errors.ConfigError` (an option or path) or a
:class:`~ecg_anomaly.schemas.datasets.DataError` (the data), each one line that names the
option, the path, or the file, row and column.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.schemas.datasets import DataError, Dataset
from ecg_anomaly.trainer.errors import missing_training_extra

TRAINING_MODULES = ("tensorflow", "tf2onnx", "onnx", "matplotlib")  # the train extra's, as imported

# A training value further than this many times the spread of the middle 99.8 % of training values
# from that middle is refused: min-max normalisation would squeeze every other beat into a sliver of
# [0, 1] and the autoencoder would learn nothing (one cell of 3e38 gave a model with ROC AUC 0.50).
OUTLIER_SPREADS = 10.0
_MIDDLE = (0.1, 99.9)  # percentiles that bound "the middle" of the values


def training_extra() -> None:
    """Refuse at once, before any data is read, on an install without the train extra.

    ``find_spec`` looks the modules up without importing them (TensorFlow takes seconds).
    """
    for name in TRAINING_MODULES:
        if importlib.util.find_spec(name) is None:
            raise missing_training_extra(ModuleNotFoundError(name=name))


def writable_directory(path: Path, option: str) -> Path:
    """Create ``path`` (and its parents) if needed and prove it takes a file; else :class:`ConfigError`."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from exc
    return path


def writable_file(path: Path, option: str) -> Path:
    """``path`` can be created or replaced: its folder exists and is writable, and it is not a folder."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory, expected a file name")
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{option} {path}: not writable")
    return path


def write_file(path: Path, option: str, text: str) -> None:
    """Write ``text`` to ``path``; an operating-system refusal (disk full, permissions) is one line."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot write ({exc.strerror or exc})") from exc


def require_rows(dataset: Dataset, part: str, normal: bool, why: str) -> None:
    """``dataset`` (a part of the data) has a normal (or an abnormal) row; else a :class:`DataError`."""
    assert dataset.is_normal is not None
    found = dataset.is_normal if normal else ~dataset.is_normal
    if not found.any():
        kind = "normal rows (label 1)" if normal else "abnormal rows"
        raise DataError(f"{dataset.source}: {part} has no {kind}: {why}")


def check_training_values(train: Dataset) -> None:
    """The training split can be min-max normalised: not constant, no value far outside the rest."""
    values = train.beats
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        raise DataError(
            f"{train.source}: every training value is {lo:g}: nothing to learn, and min-max normalisation "
            "would divide by zero"
        )
    middle_lo, middle_hi = (float(v) for v in np.percentile(values, _MIDDLE))
    spread = middle_hi - middle_lo  # 0 when almost every value is equal: any other value is then too far
    distance = np.maximum(middle_lo - values.astype(np.float64), values.astype(np.float64) - middle_hi)
    outside = distance > OUTLIER_SPREADS * spread
    if not outside.any():
        return
    # The most extreme value is named: it is the one that ruins the normalisation.
    row, column = (int(i) for i in np.unravel_index(np.argmax(distance), values.shape))
    raise DataError(
        f"{train.locate(row, column)}: {float(values[row, column]):g} is far "
        f"outside the other training values (99.8 % of them lie in [{middle_lo:.4g}, {middle_hi:.4g}]); "
        f"min-max normalisation would squeeze every other beat into a sliver: fix or remove the row "
        f"({int(outside.sum())} such value{'s' if outside.sum() != 1 else ''} in the training split)"
    )


def check_model_version(version: str) -> str:
    """``version`` is what the artifact contract accepts (checked now, not after training)."""
    import jsonschema

    from ecg_anomaly.schemas.artifact import metadata_schema

    try:
        jsonschema.validate(version, metadata_schema()["properties"]["model_version"])
    except jsonschema.ValidationError as exc:
        raise ConfigError(f"--model-version {version!r}: {exc.message}") from None
    return version
