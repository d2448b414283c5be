"""The scoring model: the trainer's ONNX artifact under onnxruntime, and its hot reload.

:class:`Model` is immutable once loaded; the loop swaps the whole object
between batches, so a batch is always scored by exactly one model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ecg_anomaly.schemas.artifact import (
    INPUT_NAME,
    SAMPLE_ERROR_OUTPUT,
    SCORE_OUTPUT,
    ArtifactError,
    ArtifactMetadata,
)
from ecg_anomaly.schemas.loader import open_artifact

log = logging.getLogger(__name__)

# Beats per onnxruntime call: one call per batch at the default --max-batch. onnxruntime keeps the
# largest intermediates it has needed: after calls of 256, 512 and 1,024 beats of the default
# preset's graph a process was 3.1, 7.4 and 14.8 MB more resident than with the session loaded alone
# (the worker's peak in a 500,000-beat drain: 129-133 MB with 512, 136-139 MB with 1,024). Each call
# hands the GIL back to the scoring thread once, a switch the loop waits for, and longer for a
# lower-priority scoring thread (ecg_anomaly.worker.pipeline.SCORING_NICE). Draining 500,000 binary
# beats (three A/B runs, first rounds left out: the broker was busy in them), niced with calls of
# 1,024 the worker was 2-10% faster than at its normal priority with 512 in 7 of 8 rounds and 6%
# slower in one; niced with 512, or at normal priority with 1,024, it was no faster.
CALL_ROWS = 1024


@dataclass(frozen=True)
class Scores:
    score: np.ndarray  # float32 [N]
    sample_error: np.ndarray  # float32 [N, input_length]


class Model:
    def __init__(self, session: ort.InferenceSession, metadata: ArtifactMetadata, sha256: str) -> None:
        self.session = session
        self.metadata = metadata
        self.sha256 = sha256
        self.threshold = metadata.threshold
        self.version = metadata.model_version
        self._outputs = [SCORE_OUTPUT, SAMPLE_ERROR_OUTPUT]

    def score(self, beats: np.ndarray) -> Scores:
        """Scores and per-sample errors, in calls of at most :data:`CALL_ROWS` beats."""
        if beats.shape[0] <= CALL_ROWS:
            score, sample_error = self.session.run(self._outputs, {INPUT_NAME: beats})
            return Scores(score, sample_error)
        parts = [
            self.session.run(self._outputs, {INPUT_NAME: beats[start : start + CALL_ROWS]})
            for start in range(0, beats.shape[0], CALL_ROWS)
        ]
        return Scores(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def load_model(
    path: Path, expected_sha256: str = "", threshold: float | None = None, threads: int = 1
) -> Model:
    """Load and validate the artifact, or raise :class:`ArtifactError` saying what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"model file {path}: {exc.strerror or exc}") from exc
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 and sha256 != expected_sha256:
        raise ArtifactError(f"model file {path}: sha256 is {sha256}, expected {expected_sha256}")
    session, metadata = open_artifact(data, f"model file {path}", threads)
    if threshold is not None:
        metadata = metadata.with_threshold(threshold)
    return Model(session, metadata, sha256)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ModelReloader:
    """Watches the model file; offers a validated new :class:`Model` when it changes.

    A file that fails validation is remembered by its signature (mtime, size,
    inode) so it is reported once, not on every check; the old model stays.
    """

    def __init__(self, path: Path, expected_sha256: str, threshold: float | None, threads: int) -> None:
        self.path = path
        self._expected = expected_sha256
        self._threshold = threshold
        self._threads = threads
        self._seen = _signature(path)

    def check(self) -> Model | None:
        """A new model if the file changed and validates; None otherwise. Raises ArtifactError if broken."""
        signature = _signature(self.path)
        if signature is None or signature == self._seen:
            return None
        self._seen = signature
        return load_model(self.path, self._expected, self._threshold, self._threads)
