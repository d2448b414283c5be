"""Named training configurations. ``tutorial`` is the TensorFlow tutorial exactly; ``default`` is ours."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.trainer.thresholds import POLICIES


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the model and its threshold; recorded in the artifact's ``training``."""

    preset: str
    encoder: tuple[int, ...]  # hidden layer sizes before the embedding; the decoder mirrors them
    embedding: int
    activation: str = "relu"
    output_activation: str = "sigmoid"
    loss: str = "mae"
    learning_rate: float = 1e-3  # Adam's default, as the tutorial
    epochs: int = 20
    batch_size: int = 512
    # Fraction of the training split held out (stratified by label) for early stopping on its
    # normal beats and for choosing the threshold. 0 = the tutorial: train on every training normal.
    validation_fraction: float = 0.0
    patience: int | None = None  # early stopping on validation-normal loss; None = off
    # Halve the learning rate when the validation loss has not improved for this many epochs; None = off.
    plateau_patience: int | None = None
    threshold_policy: str = "mean_std"
    threshold_params: dict[str, Any] = field(default_factory=lambda: {"k": 1.0})

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """A copy with the non-None ``changes`` applied, then validated."""
        config = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        config.validate()
        return config

    def validate(self) -> None:
        if any(units < 1 for units in (*self.encoder, self.embedding)):
            raise ConfigError(f"layer sizes must be positive, got {self.encoder} and {self.embedding}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch size must be at least 1")
        if not 0.0 <= self.validation_fraction < 0.9:
            raise ConfigError(f"validation fraction must be in [0, 0.9), got {self.validation_fraction}")
        if self.threshold_policy not in POLICIES:
            raise ConfigError(f"unknown threshold policy {self.threshold_policy!r}; one of {POLICIES}")
        if self.threshold_policy == "max_f1" and self.validation_fraction == 0:
            raise ConfigError(
                "threshold policy max_f1 needs labelled validation data: set a validation fraction"
            )
        if (self.patience or self.plateau_patience) and self.validation_fraction == 0:
            raise ConfigError("early stopping and plateau schedules need a validation split: set a fraction")

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["encoder"] = list(self.encoder)
        return values


PRESETS: dict[str, TrainConfig] = {
    # tensorflow.org/tutorials/generative/autoencoder, "Third example: Anomaly detection".
    "tutorial": TrainConfig(preset="tutorial", encoder=(32, 16), embedding=8),
    # Ours: wider layers and a 32-wide embedding reconstruct normal beats more closely (higher ROC AUC);
    # more epochs with early stopping on held-out training normals; the threshold with the best F1 on the
    # labelled validation part of the training split instead of mean + 1 std of the beats it trained on.
    "default": TrainConfig(
        preset="default",
        encoder=(256, 128),
        embedding=32,
        epochs=150,
        batch_size=64,
        validation_fraction=0.2,
        patience=15,
        threshold_policy="max_f1",
        threshold_params={},
    ),
    # Seconds to train; for tests and the worker's test artifact, not for use.
    "tiny": TrainConfig(
        preset="tiny",
        encoder=(32,),
        embedding=8,
        learning_rate=5e-3,
        epochs=15,
        batch_size=64,
        validation_fraction=0.2,
        patience=5,
        threshold_policy="max_f1",
        threshold_params={},
    ),
}
