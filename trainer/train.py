"""Training end to end: checks → split → normalise → fit on normals → calibrate the score → threshold →
export → evaluate → report.

Everything that can be checked without a model (options, paths, the data) is checked before
TensorFlow is imported. The test split is used only to evaluate the finished artifact (and for the
export parity check), never for fitting, early stopping, calibrating the score or the threshold.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.schemas.datasets import Dataset
from ecg_anomaly.trainer import latent, thresholds
from ecg_anomaly.trainer.evaluation import evaluate
from ecg_anomaly.trainer.export import (
    KerasScorer,
    check_parity,
    normalise,
    save_keras,
    to_onnx,
    with_metadata,
    write_artifact,
)
from ecg_anomaly.trainer.fit import Fitted, Log, fit, log_to_stderr
from ecg_anomaly.trainer.preflight import check_model_version, writable_directory
from ecg_anomaly.trainer.presets import TrainConfig
from ecg_anomaly.trainer.scoring import ScoringModel
from ecg_anomaly.trainer.splits import TUTORIAL_SPLIT, Splits, SplitSettings, make_splits

__all__ = ["SplitSettings", "TrainResult", "log_to_stderr", "train"]


@dataclass
class TrainResult:
    artifact: Path
    sha256: str
    report: Path | None
    metrics: dict[str, Any]
    threshold: thresholds.Threshold
    history: dict[str, list[float]]
    training: dict[str, Any]


def train(
    config: TrainConfig,
    dataset: Dataset,
    out_dir: Path,
    *,
    seed: int = 1,
    split: SplitSettings = TUTORIAL_SPLIT,
    model_version: str | None = None,
    quiet: bool = False,
    report: bool = True,
    verbose: bool = False,
    log: Log = log_to_stderr,
) -> TrainResult:
    """Train, export ``out_dir/model.onnx`` (+ ``model.keras``, ``metrics.json``, report) and evaluate."""
    config.validate()
    if seed < 0:
        raise ConfigError(f"--seed {seed}: must be 0 or more")
    version = check_model_version(
        model_version or f"{datetime.now(UTC):%Y%m%d%H%M%S}-{config.preset}-s{seed}"
    )
    splits = make_splits(dataset, config, split, seed)
    writable_directory(out_dir, "--out-dir")
    log(f"training preset {config.preset} on {dataset.source} ({len(dataset)} beats), seed {seed}")

    training_beats = splits.training().beats  # min-max over every training-split row, as the tutorial
    norm_min, norm_max = float(training_beats.min()), float(training_beats.max())
    fit_normal = normalise(_normal(splits.fit), norm_min, norm_max)
    val_normal = (
        None if splits.validation is None else normalise(_normal(splits.validation), norm_min, norm_max)
    )
    fitted = fit(config, fit_normal, val_normal, seed, quiet, log, verbose)

    calibrated = calibrated_scorer(config, fitted.model, splits, norm_min, norm_max, seed)
    scorer = calibrated.scorer
    if config.score == "fused" and config.abnormal_weight > 0 and calibrated.abnormal_rows is None:
        log(
            f"the known-abnormal factor is off: the training split has fewer than "
            f"{config.abnormal_min_rows} abnormal beats"
        )
    threshold = choose_threshold(config, calibrated, splits, seed)
    input_length = dataset.beats.shape[1]
    training = _training_record(config, fitted, splits, dataset, split, seed)
    metadata: dict[str, Any] = {
        "model_version": version,
        "input_length": input_length,
        "threshold": threshold.value,
        "threshold_policy": threshold.policy,
        "threshold_params": threshold.params,
        "norm_min": norm_min,
        "norm_max": norm_max,
        **scorer.metadata(),
        "metrics": {},
        "training": training,
        "library_versions": _library_versions(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if "interval_90" in threshold.params:
        low, high = threshold.params["interval_90"]
        metadata["threshold_uncertainty"] = {
            "std": threshold.params["std"],
            "interval_90": [low, high],
            "method": f"bootstrap, {threshold.params['resamples']} resamples",
        }

    # Export, and accept it only if onnxruntime agrees with Keras on the test split.
    proto = to_onnx(scorer, input_length)
    reference = scorer(splits.test.beats)
    test_scores, _ = ScoringModel.load(with_metadata(proto, metadata)).score(splits.test.beats)
    parity = check_parity(test_scores, reference.scores)
    metrics = evaluate(test_scores, splits.test.is_anomaly, threshold.value, splits.test.classes)
    metrics |= {"training_time_s": round(fitted.seconds, 2), "onnx_keras_max_abs_diff": parity}
    metadata["metrics"] = metrics

    artifact_bytes = with_metadata(proto, metadata)
    artifact = write_artifact(artifact_bytes, out_dir / "model.onnx", splits.test.beats, test_scores)
    sha256 = hashlib.sha256(artifact_bytes).hexdigest()
    save_keras(fitted.model, out_dir / "model.keras")
    summary = metrics_document(metrics, metadata) | {"sha256": sha256}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    report_path = None
    if report:
        from ecg_anomaly.trainer.report import ReportInputs, write_report

        report_path = write_report(
            out_dir / "report.html",
            ReportInputs(
                history=fitted.history,
                best_epoch=fitted.best_epoch,
                scored=reference,
                onnx_scores=test_scores,
                is_anomaly=splits.test.is_anomaly,
                classes=splits.test.classes,
                summary=summary,
                library_versions=metadata["library_versions"],
            ),
        )
    return TrainResult(artifact, sha256, report_path, metrics, threshold, fitted.history, training)


def metrics_document(metrics: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json``: the test metrics plus what produced them (same shape from ``evaluate``)."""
    keys = (
        "model_version",
        "threshold_policy",
        "threshold_params",
        "threshold_uncertainty",
        "score",
        "score_params",
        "training",
    )
    return {"metrics": metrics, **{k: metadata[k] for k in keys if k in metadata}}


@dataclass(frozen=True)
class Calibrated:
    """The scoring definition, and how to score the held-out normal beats without bias."""

    scorer: KerasScorer
    held_out_rows: np.ndarray | None  # each validation normal's row in the code bank (-1: not in it)
    # each training-split abnormal beat's row in the known-abnormal bank (-1: not in it); None: no bank
    abnormal_rows: np.ndarray | None = None

    def held_out(self, normal: np.ndarray) -> np.ndarray:
        """Scores of the validation part's normal beats, each measured without its own code."""
        return self.scorer(normal, self.held_out_rows).scores

    def training_abnormal(self, splits: Splits) -> np.ndarray:
        """Scores of the training split's abnormal beats, in its order, each measured without its own
        code in the known-abnormal bank: as an abnormal beat of a kind seen in training, not as itself."""
        training = splits.training()
        return self.scorer(training.beats[~_labels(training)], abnormal_row=self.abnormal_rows).scores


def calibrated_scorer(
    config: TrainConfig, model: Any, splits: Splits, norm_min: float, norm_max: float, seed: int
) -> Calibrated:
    """The scoring definition. For the fused score: a bank of the codes of every training-split normal
    beat (capped at ``bank_size``); its constants from the validation part's normal beats, which the
    model did not fit and whose distances leave out their own codes; its k chosen on those and the
    training split's abnormal beats. With a known-abnormal weight and enough abnormal beats in the
    training split, a second bank of their codes (capped at ``abnormal_bank_size``), each of them
    measured without its own code. Never the test split."""
    scorer = KerasScorer(model, norm_min, norm_max, config.score)
    if config.score != "fused":
        return Calibrated(scorer, None)
    assert splits.validation is not None  # TrainConfig.validate guarantees it
    held_out = _normal(splits.validation)
    fit_codes, held_out_codes = scorer.codes(_normal(splits.fit)), scorer.codes(held_out)
    codes = np.concatenate([fit_codes, held_out_codes])
    kept = latent.choose_bank(codes.shape[0], config.bank_size, seed)
    rows = latent.own_rows(np.arange(fit_codes.shape[0], codes.shape[0]), kept)
    training = splits.training()
    abnormal = training.beats[~_labels(training)]
    abnormal_codes = scorer.codes(abnormal)
    known, abnormal_rows = None, None
    if config.abnormal_weight > 0 and abnormal.shape[0] >= config.abnormal_min_rows:
        members = latent.choose_bank(abnormal.shape[0], config.abnormal_bank_size, seed)
        abnormal_rows = latent.own_rows(np.arange(abnormal.shape[0]), members)
        known = latent.KnownAbnormal(abnormal_codes[members].astype(np.float32), config.abnormal_weight)
    subspace = None
    fitted_normal = normalise(_normal(splits.fit), norm_min, norm_max)
    if config.subspace_weight > 0 and fitted_normal.shape[0] < config.subspace_max_rows:
        # Fitted on the normals the model fitted: the held-out ones calibrate it.
        subspace = latent.Subspace.fit(fitted_normal, config.subspace_components, config.subspace_weight)
    held, flagged = scorer(held_out), scorer(abnormal)
    calibration = latent.select(
        codes[kept].astype(np.float32),
        latent.Beats(held.sample_error, held_out_codes, rows, held.normalised),
        latent.Beats(flagged.sample_error, abnormal_codes, None, flagged.normalised, abnormal_rows),
        config.neighbours,
        config.rmse_weight,
        subspace,
        known,
    )
    scored = KerasScorer(model, norm_min, norm_max, config.score, calibration)
    return Calibrated(scored, rows, abnormal_rows)


def choose_threshold(
    config: TrainConfig, calibrated: Calibrated, splits: Splits, seed: int
) -> thresholds.Threshold:
    """Apply the configured policy to training-split scores only (never ``splits.test``)."""
    params = dict(config.threshold_params)
    scorer = calibrated.scorer
    if splits.validation is None:
        source, normal = "training_normal", scorer(_normal(splits.fit)).scores
    else:
        source, normal = "validation_normal", calibrated.held_out(_normal(splits.validation))
    match config.threshold_policy:
        case "mean_std":
            chosen = thresholds.mean_std(normal, **params)
        case "percentile":
            chosen = thresholds.percentile(normal, **params)
        case "false_alarm_rate":
            chosen = thresholds.false_alarm_rate(normal, **params)
        case "max_f1" | "smoothed_f1":
            assert splits.validation is not None  # TrainConfig.validate guarantees it
            # The model never trains on abnormal beats, so every abnormal beat of the training split
            # scores as an unseen one, its own code left out of the known-abnormal bank (max_f1 keeps
            # to the validation part's, as it always did).
            # Normal beats come from the validation part only, each counting for as many training
            # normals as there are per validation normal.
            abnormal = calibrated.training_abnormal(splits)
            if config.threshold_policy == "max_f1":  # the validation part's: the training split's last
                abnormal = abnormal[abnormal.size - int((~_labels(splits.validation)).sum()) :]
            errors = np.concatenate([normal, abnormal])
            labels = np.arange(errors.size) >= normal.size
            if config.threshold_policy == "max_f1":
                source, chosen = "validation_labelled", thresholds.max_f1(errors, labels)
            else:
                source = "validation_normal+training_abnormal"
                weight = float(_labels(splits.training()).sum() / normal.size)
                chosen = thresholds.smoothed_f1(errors, labels, normal_weight=weight, seed=seed, **params)
        case other:
            raise ConfigError(f"unknown threshold policy {other!r}")
    # Rounded to float32, the scores' type, so "score > threshold" gives the same answer in every consumer.
    value = float(np.float32(chosen.value))
    return thresholds.Threshold(value, chosen.policy, {**chosen.params, "errors_from": source})


def _training_record(
    config: TrainConfig, fitted: Fitted, splits: Splits, dataset: Dataset, split: SplitSettings, seed: int
) -> dict[str, Any]:
    rows = {"fit_normal": int(_labels(splits.fit).sum()), "test": len(splits.test)}
    if splits.validation is not None:
        rows["validation"] = len(splits.validation)
    return {
        **config.as_dict(),
        "seed": seed,
        "data": dataset.source,
        "split": {"test_size": split.test_size, "random_state": split.random_state},
        "rows": rows,
        "epochs_run": len(fitted.history["loss"]),
        "best_epoch": fitted.best_epoch,
        "max_epochs": fitted.max_epochs,
        "training_time_s": round(fitted.seconds, 2),
    }


def _labels(dataset: Dataset) -> np.ndarray:
    assert dataset.is_normal is not None
    return dataset.is_normal


def _normal(dataset: Dataset) -> np.ndarray:
    return dataset.beats[_labels(dataset)]


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
