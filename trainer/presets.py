"""Named training configurations. ``tutorial`` is the TensorFlow tutorial exactly; ``default`` is ours."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.trainer.thresholds import LABELLED_POLICIES, POLICIES

ARCHITECTURES = ("dense", "conv")
# "mae": mean absolute error (the tutorial's); "fused": reconstruction RMSE fused with the distance to
# the nearest training normals in the autoencoder's code space (trainer/latent.py).
SCORES = ("mae", "fused")
# Each policy's parameters and what a valid value is; checked before training starts.
POLICY_PARAMETERS: dict[str, dict[str, tuple[str, Any]]] = {
    "mean_std": {"k": ("a finite number", math.isfinite)},
    "percentile": {"q": ("in (0, 100]", lambda q: 0 < q <= 100)},
    "false_alarm_rate": {"rate": ("in [0, 1)", lambda r: 0 <= r < 1)},
    "max_f1": {},
    "smoothed_f1": {"resamples": ("an integer of at least 1", lambda n: n == int(n) and n >= 1)},
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the model and its threshold; recorded in the artifact's ``training``."""

    preset: str
    encoder: tuple[int, ...]  # dense: hidden layer sizes before the embedding; the decoder mirrors them
    embedding: int
    architecture: str = "dense"
    conv_channels: tuple[int, ...] = (8, 16)  # conv: channels of each stride-2 convolution
    conv_kernels: tuple[int, ...] = (7, 5)  # conv: their kernel widths
    decoder: tuple[int, ...] = (128,)  # conv: dense hidden layers between the embedding and the output
    activation: str = "relu"
    output_activation: str = "sigmoid"
    loss: str = "mae"
    learning_rate: float = 1e-3  # Adam's default, as the tutorial
    epochs: int = 20
    # At least this many gradient steps: a few hundred beats make a handful of batches per epoch, and
    # the epoch cap alone would stop them long before the model has converged. Patience scales along.
    min_steps: int = 0
    batch_size: int = 512
    # Fraction of the training split held out (stratified by label) for early stopping on its
    # normal beats and for choosing the threshold. 0 = the tutorial: train on every training normal.
    validation_fraction: float = 0.0
    patience: int | None = None  # early stopping on validation-normal loss; None = off
    # Halve the learning rate when the validation loss has not improved for this many epochs; None = off.
    plateau_patience: int | None = None
    threshold_policy: str = "mean_std"
    threshold_params: dict[str, Any] = field(default_factory=lambda: {"k": 1.0})
    score: str = "mae"
    # fused: the candidates for k, the nearest training normals in code space (chosen on validation data)
    neighbours: tuple[int, ...] = (1, 2, 3)
    rmse_weight: float = 0.2  # fused: the reconstruction error's weight w in the geometric mean
    # fused: at most this many training normals' codes travel in the graph (with 1,024 instead the
    # development splits scored no better, and onnxruntime's top-k over them cost 1 us more per beat)
    bank_size: int = 512
    # fused: the weight p of a third factor, the residual of the normalised beat outside the first
    # subspace_components principal components of the fitted normal beats (trainer/latent.py); 0 = off
    subspace_weight: float = 0.0
    subspace_components: int = 2
    # ...only when the model fits fewer normal beats than this: with thousands the autoencoder and the
    # nearest normals do better alone (measured on development splits, docs/training.md)
    subspace_max_rows: int = 1000
    # fused: the power q of the raise for beats close to a known abnormal beat of the training split
    # (trainer/latent.py); 0 = off
    abnormal_weight: float = 0.0
    abnormal_bank_size: int = 256  # at most this many abnormal beats' codes travel in the graph
    abnormal_min_rows: int = 20  # ...and only when the training split has at least this many

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """A copy with the non-None ``changes`` applied, then validated."""
        config = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        config.validate()
        return config

    def validate(self) -> None:
        """Every value in range and every combination possible; :class:`ConfigError` names what is not."""
        sizes = (*self.encoder, self.embedding, *self.conv_channels, *self.conv_kernels, *self.decoder)
        if any(units < 1 for units in sizes):
            raise ConfigError(f"layer sizes must be positive, got {self.encoder} and {self.embedding}")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {self.architecture!r}; one of {ARCHITECTURES}")
        if len(self.conv_channels) != len(self.conv_kernels) or not self.conv_channels:
            raise ConfigError(
                f"conv: {len(self.conv_kernels)} kernel widths for {len(self.conv_channels)} convolutions"
            )
        if self.architecture == "conv" and self.encoder:
            raise ConfigError("encoder layer sizes are for the dense architecture (conv uses conv channels)")
        if self.epochs < 1 or self.batch_size < 1 or self.min_steps < 0:
            raise ConfigError("epochs and batch size must be at least 1 (and minimum steps not negative)")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning rate must be a positive number, got {self.learning_rate}")
        if not 0.0 <= self.validation_fraction < 0.9:
            raise ConfigError(f"validation fraction must be in [0, 0.9), got {self.validation_fraction}")
        if any(p is not None and p < 1 for p in (self.patience, self.plateau_patience)):
            raise ConfigError("patience must be at least 1 epoch (0 turns it off)")
        self._validate_threshold()
        if self.score not in SCORES:
            raise ConfigError(f"unknown score {self.score!r}; one of {SCORES}")
        if self.score == "fused":
            if self.validation_fraction == 0:
                raise ConfigError(
                    "the fused score is calibrated on held-out normals: set a validation fraction"
                )
            if not self.neighbours or min(self.neighbours) < 1 or max(self.neighbours) > self.bank_size:
                raise ConfigError("neighbours must be at least 1 and at most the bank size")
            if not 0.0 <= self.rmse_weight <= 1.0:
                raise ConfigError(f"rmse weight must be in [0, 1], got {self.rmse_weight}")
            if not 0.0 <= self.abnormal_weight <= 1.0 or self.abnormal_bank_size < 1:
                raise ConfigError(
                    f"abnormal weight must be in [0, 1] and its bank size at least 1, got "
                    f"{self.abnormal_weight} and {self.abnormal_bank_size}"
                )
            if not 0.0 <= self.subspace_weight < 1.0 or self.subspace_components < 1:
                raise ConfigError(
                    f"subspace weight must be in [0, 1) and its components at least 1, got "
                    f"{self.subspace_weight} and {self.subspace_components}"
                )
        if (self.patience or self.plateau_patience) and self.validation_fraction == 0:
            raise ConfigError("early stopping and plateau schedules need a validation split: set a fraction")

    def _validate_threshold(self) -> None:
        if self.threshold_policy not in POLICIES:
            raise ConfigError(f"unknown threshold policy {self.threshold_policy!r}; one of {POLICIES}")
        if self.threshold_policy in LABELLED_POLICIES and self.validation_fraction == 0:
            raise ConfigError(
                f"threshold policy {self.threshold_policy} needs labelled validation data: "
                "set a validation fraction"
            )
        allowed = POLICY_PARAMETERS[self.threshold_policy]
        for name, value in self.threshold_params.items():
            if name not in allowed:
                raise ConfigError(f"threshold policy {self.threshold_policy} has no parameter {name!r}")
            text, valid = allowed[name]
            if not (isinstance(value, int | float) and math.isfinite(value) and valid(value)):
                flag = f"--threshold-{name}"
                raise ConfigError(
                    f"{flag} {value!r}: must be {text} for threshold policy {self.threshold_policy}"
                )

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        for key in ("encoder", "conv_channels", "conv_kernels", "decoder", "neighbours"):
            values[key] = list(values[key])
        return values


PRESETS: dict[str, TrainConfig] = {
    # tensorflow.org/tutorials/generative/autoencoder, "Third example: Anomaly detection".
    "tutorial": TrainConfig(preset="tutorial", encoder=(32, 16), embedding=8),
    # Ours (docs/model-quality.md has the measurements behind each choice): a convolutional autoencoder
    # whose code space carries the score (the distance to the nearest training normal, fused with the
    # reconstruction error, and raised for beats close to a known abnormal beat of the training split);
    # at least 3,000 gradient steps with early stopping on held-out training normals; the threshold with
    # the best F1 on kernel-smoothed validation errors, with its uncertainty.
    "default": TrainConfig(
        preset="default",
        encoder=(),
        embedding=32,
        architecture="conv",
        epochs=150,
        min_steps=3000,
        batch_size=64,
        validation_fraction=0.2,
        patience=15,
        threshold_policy="smoothed_f1",
        threshold_params={},
        score="fused",
        # k = 1: on the development splits k = 2 or 3 scored no better (ROC AUC within 0.00001), and
        # the nearest normal is an arg-max where k of them cost onnxruntime a top-k (a quarter of the
        # graph's time)
        neighbours=(1,),
        subspace_weight=1 / 3,
        abnormal_weight=0.6,
    ),
    # Seconds to train; for tests and the worker's test artifact, not for use. The default's scoring and
    # threshold policy, so the tests exercise them.
    "tiny": TrainConfig(
        preset="tiny",
        encoder=(),
        embedding=8,
        architecture="conv",
        conv_channels=(4, 8),
        decoder=(32,),
        learning_rate=5e-3,
        epochs=15,
        batch_size=64,
        validation_fraction=0.2,
        patience=5,
        threshold_policy="smoothed_f1",
        threshold_params={"resamples": 20},
        score="fused",
        neighbours=(1,),
        bank_size=256,
        subspace_weight=1 / 3,
        abnormal_weight=0.6,
        abnormal_bank_size=64,
    ),
}
