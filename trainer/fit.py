"""Fitting the autoencoder with Keras: TensorFlow's import (quiet unless asked), seeds, callbacks, epochs.

The only module besides ``model`` and ``export`` that touches TensorFlow, and only when called.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecg_anomaly.trainer.errors import missing_training_extra
from ecg_anomaly.trainer.presets import TrainConfig

Log = Callable[[str], None]


def log_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def import_tensorflow(verbose: bool = False) -> tuple[Any, Any]:
    """``(keras, tensorflow)``; unless ``verbose``, TensorFlow's C++ and Python log lines are silenced.

    TensorFlow's C++ libraries log through absl before absl is initialised, straight to file
    descriptor 2 and whatever ``TF_CPP_MIN_LOG_LEVEL`` says (measured with TensorFlow 2.21), so the
    descriptor itself points at /dev/null while they load; later C++ lines obey the variable.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with contextlib.nullcontext() if verbose else _stderr_descriptor_silenced():
            import keras
            import tensorflow as tf
            import tf2onnx  # noqa: F401  (imported here so its import is silenced too)
    except ImportError as exc:
        raise missing_training_extra(exc) from exc
    if not verbose:
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    return keras, tf


@contextlib.contextmanager
def _stderr_descriptor_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class Fitted:
    model: Any
    history: dict[str, list[float]]
    best_epoch: int  # 1-based: the epoch whose weights were kept
    max_epochs: int
    seconds: float


def schedule(config: TrainConfig, rows: int) -> tuple[int, int | None]:
    """``(max epochs, patience)``: the preset's, stretched to ``min_steps`` gradient steps on few rows."""
    steps_per_epoch = max(1, math.ceil(rows / config.batch_size))
    stretch = max(1.0, config.min_steps / (config.epochs * steps_per_epoch))
    epochs = math.ceil(config.epochs * stretch)
    patience = None if config.patience is None else math.ceil(config.patience * stretch)
    return epochs, patience


def fit(
    config: TrainConfig,
    fit_normal: np.ndarray,
    validation_normal: np.ndarray | None,
    seed: int,
    quiet: bool,
    log: Log,
    verbose: bool = False,
) -> Fitted:
    """Build and fit the autoencoder on normalised normal beats; the best weights by validation loss."""
    keras, tf = import_tensorflow(verbose)
    keras.utils.set_random_seed(seed)  # python, numpy and TensorFlow
    tf.config.experimental.enable_op_determinism()

    from ecg_anomaly.trainer.model import build_autoencoder

    model = build_autoencoder(config, fit_normal.shape[1])
    epochs, patience = schedule(config, fit_normal.shape[0])
    started = time.perf_counter()
    history = model.fit(
        fit_normal,
        fit_normal,
        epochs=epochs,
        batch_size=config.batch_size,
        validation_data=None if validation_normal is None else (validation_normal, validation_normal),
        shuffle=True,
        verbose=0,
        callbacks=_callbacks(keras, config, epochs, patience, quiet, log),
    )
    seconds = time.perf_counter() - started
    losses = {k: [float(v) for v in values] for k, values in history.history.items()}
    watched = losses.get("val_loss") if patience is not None else None
    best = int(np.argmin(watched)) + 1 if watched else len(losses["loss"])
    return Fitted(model, losses, best, epochs, seconds)


def _callbacks(
    keras: Any, config: TrainConfig, epochs: int, patience: int | None, quiet: bool, log: Log
) -> list[Any]:
    callbacks: list[Any] = []
    if patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
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
                log(f"epoch {epoch + 1:>3}/{epochs}  loss {loss:.5f}{val}  {seconds:.1f}s")

        callbacks.append(Progress())
    return callbacks
