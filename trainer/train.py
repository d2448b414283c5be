"""Training end to end: split → normalise → fit on normals → threshold → export → evaluate → report.

House rule, enforced here and tested: the test split is used only to evaluate the
finished artifact (and for the export parity check), never for fitting, early
stopping or choosing the threshold.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.schemas.datasets import Dataset, require_normal_rows, split_train_test
from ecg_anomaly.trainer import thresholds
from ecg_anomaly.trainer.errors import missing_training_extra
from ecg_anomaly.trainer.evaluation import evaluate
from ecg_anomaly.trainer.export import (
    check_parity,
    keras_scores,
    normalise,
    save_keras,
    to_onnx,
    with_metadata,
    write_artifact,
)
from ecg_anomaly.trainer.presets import TrainConfig
from ecg_anomaly.trainer.scoring import ScoringModel

Log = Callable[[str], None]


def log_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SplitSettings:
    test_size: float = 0.2
    random_state: int = 21  # the tutorial's


@dataclass
class TrainResult:
    artifact: Path
    metrics: dict[str, Any]
    threshold: thresholds.Threshold
    history: dict[str, list[float]]
    training: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Splits:
    """The training split cut into the part the model fits and a labelled validation part."""

    fit: Dataset
    validation: Dataset | None
    test: Dataset


def make_splits(dataset: Dataset, config: TrainConfig, split: SplitSettings, seed: int) -> Splits:
    """Test split first (the tutorial's), then a stratified validation part of the training split."""
    if dataset.is_normal is None:
        raise ConfigError(f"{dataset.source}: training needs labelled data")
    train, test = split_train_test(dataset, split.test_size, split.random_state)
    require_normal_rows(train)
    if config.validation_fraction == 0:
        return Splits(fit=train, validation=None, test=test)
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(train), dtype=bool)
    assert train.is_normal is not None
    for group in (train.is_normal, ~train.is_normal):
        index = rng.permutation(np.flatnonzero(group))
        held_out[index[: round(config.validation_fraction * index.size)]] = True
    fit, validation = train.take(np.flatnonzero(~held_out)), train.take(np.flatnonzero(held_out))
    require_normal_rows(fit)
    require_normal_rows(validation)
    return Splits(fit=fit, validation=validation, test=test)


def train(
    config: TrainConfig,
    dataset: Dataset,
    out_dir: Path,
    *,
    seed: int = 1,
    split: SplitSettings = SplitSettings(),
    model_version: str | None = None,
    quiet: bool = False,
    report: bool = True,
    log: Log = log_to_stderr,
) -> TrainResult:
    """Train, export ``out_dir/model.onnx`` (+ ``model.keras``, ``metrics.json``, report) and evaluate."""
    config.validate()
    keras, tf = _import_tensorflow()
    keras.utils.set_random_seed(seed)  # python, numpy and TensorFlow
    tf.config.experimental.enable_op_determinism()

    splits = make_splits(dataset, config, split, seed)
    norm_min, norm_max = float(splits.fit.beats.min()), float(splits.fit.beats.max())
    if splits.validation is not None:  # min-max over every training-split row, as the tutorial
        norm_min = min(norm_min, float(splits.validation.beats.min()))
        norm_max = max(norm_max, float(splits.validation.beats.max()))
    fit_normal = normalise(_normal_beats(splits.fit), norm_min, norm_max)
    val_normal = (
        None if splits.validation is None else normalise(_normal_beats(splits.validation), norm_min, norm_max)
    )

    from ecg_anomaly.trainer.model import build_autoencoder

    input_length = dataset.beats.shape[1]
    model = build_autoencoder(config, input_length)
    started = time.perf_counter()
    history = model.fit(
        fit_normal,
        fit_normal,
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_data=None if val_normal is None else (val_normal, val_normal),
        shuffle=True,
        verbose=0,
        callbacks=_callbacks(keras, config, quiet, log),
    )
    training_time = time.perf_counter() - started
    losses = {k: [float(v) for v in values] for k, values in history.history.items()}

    threshold = choose_threshold(config, model, splits, norm_min, norm_max)
    training = {
        **config.as_dict(),
        "seed": seed,
        "data": dataset.source,
        "split": {"test_size": split.test_size, "random_state": split.random_state},
        "rows": {"fit_normal": int(fit_normal.shape[0]), "test": len(splits.test)}
        | ({} if splits.validation is None else {"validation": len(splits.validation)}),
        "epochs_run": len(losses["loss"]),
        "training_time_s": round(training_time, 2),
    }
    metadata: dict[str, Any] = {
        "model_version": model_version or f"{datetime.now(UTC):%Y%m%d%H%M%S}-{config.preset}-s{seed}",
        "input_length": input_length,
        "threshold": threshold.value,
        "threshold_policy": threshold.policy,
        "threshold_params": threshold.params,
        "norm_min": norm_min,
        "norm_max": norm_max,
        "score": "mae_normalised",
        "metrics": {},
        "training": training,
        "library_versions": _library_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }

    # Export, and accept it only if onnxruntime agrees with Keras on the test split.
    proto = to_onnx(model, norm_min, norm_max, input_length)
    test_scores, _ = ScoringModel.load(with_metadata(proto, metadata)).score(splits.test.beats)
    parity = check_parity(test_scores, keras_scores(model, splits.test.beats, norm_min, norm_max))
    metrics = evaluate(test_scores, splits.test.is_anomaly, threshold.value, splits.test.classes)
    metrics |= {"training_time_s": round(training_time, 2), "onnx_keras_max_abs_diff": parity}
    metadata["metrics"] = metrics

    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = write_artifact(
        with_metadata(proto, metadata), out_dir / "model.onnx", splits.test.beats, test_scores
    )
    save_keras(model, out_dir / "model.keras")
    summary = metrics_document(metrics, metadata)
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if report:
        from ecg_anomaly.trainer.report import ReportInputs, write_report

        x_test = normalise(splits.test.beats, norm_min, norm_max)
        write_report(
            out_dir,
            ReportInputs(
                history=losses,
                normalised=x_test,
                reconstructed=model.predict(x_test, batch_size=1024, verbose=0),
                scores=test_scores,
                is_anomaly=splits.test.is_anomaly,
                summary=summary,
            ),
        )
    return TrainResult(artifact, metrics, threshold, losses, training)


def metrics_document(metrics: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json``: the test metrics plus what produced them (same shape from ``evaluate``)."""
    keys = ("model_version", "threshold_policy", "threshold_params", "training")
    return {"metrics": metrics, **{k: metadata[k] for k in keys if k in metadata}}


def choose_threshold(
    config: TrainConfig, model: Any, splits: Splits, norm_min: float, norm_max: float
) -> thresholds.Threshold:
    """Apply the configured policy to training-split errors only (never ``splits.test``)."""
    params = dict(config.threshold_params)
    if splits.validation is None:
        source, errors = "training_normal", keras_scores(model, _normal_beats(splits.fit), norm_min, norm_max)
    else:
        source, errors = (
            "validation_normal",
            keras_scores(model, _normal_beats(splits.validation), norm_min, norm_max),
        )
    match config.threshold_policy:
        case "mean_std":
            chosen = thresholds.mean_std(errors, **params)
        case "percentile":
            chosen = thresholds.percentile(errors, **params)
        case "false_alarm_rate":
            chosen = thresholds.false_alarm_rate(errors, **params)
        case "max_f1":
            assert splits.validation is not None  # TrainConfig.validate guarantees it
            source = "validation_labelled"
            labelled = keras_scores(model, splits.validation.beats, norm_min, norm_max)
            chosen = thresholds.max_f1(labelled, splits.validation.is_anomaly)
        case other:
            raise ConfigError(f"unknown threshold policy {other!r}")
    # Rounded to float32, the scores' type, so "score > threshold" gives the same answer in every consumer.
    value = float(np.float32(chosen.value))
    return thresholds.Threshold(value, chosen.policy, {**chosen.params, "errors_from": source})


def _normal_beats(dataset: Dataset) -> np.ndarray:
    assert dataset.is_normal is not None
    return dataset.beats[dataset.is_normal]


def _callbacks(keras: Any, config: TrainConfig, quiet: bool, log: Log) -> list[Any]:
    callbacks: list[Any] = []
    if config.patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.patience, restore_best_weights=True
            )
        )
    if config.plateau_patience is not None:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=config.plateau_patience, min_lr=1e-5
            )
        )
    if not quiet:

        class Progress(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
            def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                logs = logs or {}
                val = f"  val_loss {logs['val_loss']:.5f}" if "val_loss" in logs else ""
                seconds = time.perf_counter() - self.started
                loss = logs.get("loss", float("nan"))
                log(f"epoch {epoch + 1:>3}/{config.epochs}  loss {loss:.5f}{val}  {seconds:.1f}s")

        callbacks.append(Progress())
    return callbacks


def _import_tensorflow() -> tuple[Any, Any]:
    try:
        import keras
        import tensorflow as tf
    except ImportError as exc:
        raise missing_training_extra(exc) from exc
    return keras, tf


def _library_versions() -> dict[str, str]:
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
