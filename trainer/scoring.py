"""Scoring with an exported artifact: onnxruntime and numpy only (the worker's install suffices)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecg_anomaly.schemas.artifact import (
    INPUT_NAME,
    SAMPLE_ERROR_OUTPUT,
    SCORE_OUTPUT,
    ArtifactError,
    ArtifactMetadata,
)


@dataclass
class ScoringModel:
    """An onnxruntime session over a ``model.onnx`` plus its decoded metadata."""

    session: Any
    metadata: ArtifactMetadata

    @classmethod
    def load(cls, model: Path | bytes) -> ScoringModel:
        """From a path or serialised bytes; :class:`ArtifactError` if unreadable or invalid."""
        from ecg_anomaly.schemas.loader import (
            open_artifact,  # onnxruntime: imported only when a model is used
        )

        if isinstance(model, bytes):
            return cls(*open_artifact(model, "model"))
        try:
            data = Path(model).read_bytes()
        except OSError as exc:
            raise ArtifactError(f"model file {model}: {exc.strerror or exc}") from exc
        return cls(*open_artifact(data, f"model file {model}"))

    def score(self, beats: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """``(score [N], sample_error [N, L])`` for raw beats ``[N, L]``."""
        beats = np.ascontiguousarray(beats, dtype=np.float32)
        if beats.ndim != 2 or beats.shape[1] != self.metadata.input_length:
            raise ArtifactError(
                f"beats have shape {beats.shape}; the model expects [N, {self.metadata.input_length}]"
            )
        scores, sample_errors = [], []
        for start in range(0, beats.shape[0], batch_size):
            score, sample_error = self.session.run(
                [SCORE_OUTPUT, SAMPLE_ERROR_OUTPUT], {INPUT_NAME: beats[start : start + batch_size]}
            )
            scores.append(score)
            sample_errors.append(sample_error)
        if not scores:
            return np.empty(0, np.float32), np.empty((0, self.metadata.input_length), np.float32)
        return np.concatenate(scores), np.concatenate(sample_errors)
