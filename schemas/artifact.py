"""The model artifact contract: one ONNX file with a scoring graph and its metadata.

Graph: input ``beats`` float32 ``[N, input_length]`` of raw values; outputs
``score`` float32 ``[N]`` (higher = more anomalous; the metadata's ``score``
names its definition: the mean absolute reconstruction error in normalised
space, or that error fused with a distance in the autoencoder's code space)
and ``sample_error`` float32 ``[N, input_length]`` (the absolute
reconstruction error of each sample). The min-max normalisation is inside
the graph.

Metadata: ONNX ``metadata_props`` is a string-to-string map. Numbers are stored
as decimal text and objects as JSON text; :func:`decode_metadata` turns it back
into typed values and validates them against ``artifact_metadata.schema.json``.
This module imports neither onnx nor onnxruntime, so both sides can use it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from ecg_anomaly.base.errors import EcgAnomalyError

INPUT_NAME = "beats"
SCORE_OUTPUT = "score"
SAMPLE_ERROR_OUTPUT = "sample_error"
ARTIFACT_FORMAT = 1

_NUMBER_KEYS = ("threshold", "norm_min", "norm_max")
_INTEGER_KEYS = ("artifact_format", "input_length")
_JSON_KEYS = (
    "threshold_params",
    "threshold_uncertainty",
    "score_params",
    "metrics",
    "training",
    "library_versions",
)


class ArtifactError(EcgAnomalyError):
    """The model artifact is missing, unreadable, or its metadata is invalid."""


@cache
def metadata_schema() -> dict[str, Any]:
    text = resources.files("ecg_anomaly.schemas").joinpath("artifact_metadata.schema.json").read_text()
    return json.loads(text)


@dataclass(frozen=True)
class ArtifactMetadata:
    model_version: str
    input_length: int
    threshold: float
    threshold_policy: str
    threshold_params: dict[str, Any]
    norm_min: float
    norm_max: float
    metrics: dict[str, Any]
    training: dict[str, Any]
    library_versions: dict[str, str]
    created_at: str

    def with_threshold(self, threshold: float) -> ArtifactMetadata:
        """A copy with an operator's threshold override, recorded in ``threshold_params``."""
        if not (math.isfinite(threshold) and threshold > 0):
            raise ArtifactError(f"threshold override must be a positive finite number, got {threshold!r}")
        params = {"override": threshold, "artifact_threshold": self.threshold}
        return ArtifactMetadata(**{**self.__dict__, "threshold": threshold, "threshold_params": params})


def encode_metadata(values: dict[str, Any]) -> dict[str, str]:
    """Typed metadata → the string map stored in ``metadata_props``. Validates first."""
    values = {"artifact_format": ARTIFACT_FORMAT, **values}
    _validate(values)
    encoded: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict | list):
            encoded[key] = json.dumps(value, sort_keys=True)
        elif isinstance(value, float):
            encoded[key] = repr(value)
        else:
            encoded[key] = str(value)
    return encoded


def decode_metadata(props: dict[str, str]) -> ArtifactMetadata:
    """``metadata_props`` → :class:`ArtifactMetadata`, or :class:`ArtifactError` naming the bad key."""
    values: dict[str, Any] = dict(props)
    for key in _INTEGER_KEYS:
        if key in values:
            values[key] = _parse(key, values[key], int)
    for key in _NUMBER_KEYS:
        if key in values:
            values[key] = _parse(key, values[key], float)
    for key in _JSON_KEYS:
        if key in values:
            values[key] = _parse(key, values[key], json.loads)
    _validate(values)
    if not values["norm_max"] > values["norm_min"]:
        raise ArtifactError(
            f"artifact metadata: norm_max ({values['norm_max']}) must be greater than norm_min "
            f"({values['norm_min']})"
        )
    fields = ArtifactMetadata.__dataclass_fields__
    return ArtifactMetadata(**{k: v for k, v in values.items() if k in fields})


def _parse(key: str, text: str, parse: Any) -> Any:
    try:
        value = parse(text)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"artifact metadata: {key}={text[:80]!r} is not valid ({exc})") from exc
    if isinstance(value, float) and not math.isfinite(value):
        raise ArtifactError(f"artifact metadata: {key}={text!r} is not a finite number")
    return value


def _validate(values: dict[str, Any]) -> None:
    try:
        jsonschema.validate(values, metadata_schema(), format_checker=jsonschema.FormatChecker())
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        missing = "" if exc.absolute_path else " (is this an ecg-anomaly model artifact?)"
        raise ArtifactError(f"artifact metadata: {where}: {exc.message}{missing}") from exc
