"""The data's parts: test split, then the training split cut into what the model fits and a validation part.

House rule, enforced here and tested: the test split is used only to evaluate the finished artifact
(and for the export parity check), never for fitting, early stopping, calibrating the score or
choosing the threshold. Everything a split must hold for training to succeed is checked here,
before TensorFlow is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.schemas.datasets import Dataset, split_train_test
from ecg_anomaly.trainer.preflight import check_training_values, require_rows
from ecg_anomaly.trainer.presets import TrainConfig
from ecg_anomaly.trainer.thresholds import LABELLED_POLICIES


@dataclass(frozen=True)
class SplitSettings:
    test_size: float = 0.2
    random_state: int = 21  # the tutorial's


TUTORIAL_SPLIT = SplitSettings()


@dataclass(frozen=True)
class Splits:
    """The training split cut into the part the model fits and a labelled validation part."""

    fit: Dataset
    validation: Dataset | None
    test: Dataset

    def training(self) -> Dataset:
        """The whole training split (fit and validation parts)."""
        if self.validation is None:
            return self.fit
        return Dataset(
            beats=np.concatenate([self.fit.beats, self.validation.beats]),
            is_normal=np.concatenate([_labels(self.fit), _labels(self.validation)]),
            classes=None,
            source=self.fit.source,
        )


def make_splits(dataset: Dataset, config: TrainConfig, split: SplitSettings, seed: int) -> Splits:
    """Test split first (the tutorial's), then a stratified validation part of the training split.

    Checks what training will need (normal rows to fit and to validate on, abnormal rows for a
    labelled threshold policy, values that min-max normalisation can use) and raises a
    :class:`~ecg_anomaly.schemas.datasets.DataError` otherwise.
    """
    if dataset.is_normal is None:
        raise ConfigError(f"{dataset.source}: training needs labelled data")
    train, test = split_train_test(dataset, split.test_size, split.random_state)
    require_rows(train, "the training split", normal=True, why="the autoencoder learns from normal beats")
    if config.threshold_policy in LABELLED_POLICIES:
        require_rows(
            train,
            "the training split",
            normal=False,
            why=f"threshold policy {config.threshold_policy} needs them (a normal-only policy such as "
            "false_alarm_rate does not)",
        )
    check_training_values(train)
    if config.validation_fraction == 0:
        return Splits(fit=train, validation=None, test=test)
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(train), dtype=bool)
    for group in (_labels(train), ~_labels(train)):
        index = rng.permutation(np.flatnonzero(group))
        held_out[index[: round(config.validation_fraction * index.size)]] = True
    fit, validation = train.take(np.flatnonzero(~held_out)), train.take(np.flatnonzero(held_out))
    why = "raise the validation fraction or bring more normal beats"
    require_rows(fit, "the part of the training split the model fits", normal=True, why=why)
    require_rows(validation, "the validation part of the training split", normal=True, why=why)
    return Splits(fit=fit, validation=validation, test=test)


def _labels(dataset: Dataset) -> np.ndarray:
    assert dataset.is_normal is not None
    return dataset.is_normal
