"""The artifact metadata contract round-trips and rejects what it must."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ecg_anomaly.schemas.artifact import ArtifactError, decode_metadata, encode_metadata


def _valid() -> dict[str, Any]:
    return {
        "model_version": "1.0.0+abc",
        "input_length": 140,
        "threshold": 0.031,
        "threshold_policy": "mean_std",
        "threshold_params": {"k": 1.0},
        "norm_min": -7.09,
        "norm_max": 7.40,
        "score": "mae_normalised",
        "metrics": {"roc_auc": 0.99},
        "training": {"preset": "default"},
        "library_versions": {"python": "3.11.7", "numpy": "2.0"},
        "created_at": "2026-11-23T18:00:00Z",
    }


def test_round_trip() -> None:
    meta = decode_metadata(encode_metadata(_valid()))
    assert meta.threshold == 0.031
    assert meta.input_length == 140
    assert meta.threshold_params == {"k": 1.0}
    assert meta.library_versions["python"] == "3.11.7"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("threshold", "abc", "threshold='abc' is not valid"),
        ("threshold", "nan", "not a finite number"),
        ("threshold", "-1", "threshold"),
        ("input_length", "1.5", "input_length"),
        ("metrics", "{not json", "metrics"),
        ("threshold_policy", "guess", "threshold_policy"),
        ("norm_max", "-8", "norm_max"),
    ],
)
def test_bad_values_are_named(key: str, value: str, message: str) -> None:
    props = encode_metadata(_valid())
    props[key] = value
    with pytest.raises(ArtifactError, match=message):
        decode_metadata(props)


def test_missing_key_is_named() -> None:
    props = encode_metadata(_valid())
    del props["threshold"]
    with pytest.raises(ArtifactError, match="'threshold' is a required property"):
        decode_metadata(props)


def test_threshold_override() -> None:
    meta = decode_metadata(encode_metadata(_valid())).with_threshold(0.05)
    assert meta.threshold == 0.05
    assert meta.threshold_params["artifact_threshold"] == 0.031
    with pytest.raises(ArtifactError):
        meta.with_threshold(float("nan"))


def test_fused_score_and_threshold_uncertainty_round_trip() -> None:
    values = _valid() | {
        "score": "rmse_latent_knn",
        "score_params": {
            "neighbours": 1,
            "rmse_weight": 0.2,
            "rmse_ref": 0.02,
            "distance_ref": 0.4,
            "bank_size": 2048,
            "code_size": 32,
        },
        "threshold_policy": "smoothed_f1",
        "threshold_uncertainty": {
            "std": 0.001,
            "interval_90": [0.03, 0.033],
            "method": "bootstrap, 100 resamples",
        },
    }
    props = encode_metadata(values)
    assert json.loads(props["score_params"])["bank_size"] == 2048
    assert decode_metadata(props).threshold_policy == "smoothed_f1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"score": "rmse_latent_knn"}, "'score_params' is a required property"),
        ({"score": "guess"}, "score"),
        (
            {"threshold_uncertainty": {"std": -1.0, "interval_90": [1, 2], "method": "x"}},
            "threshold_uncertainty",
        ),
        ({"threshold_uncertainty": {"std": 0.1, "interval_90": [1], "method": "x"}}, "threshold_uncertainty"),
    ],
)
def test_fused_score_needs_its_constants_and_uncertainty_its_shape(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ArtifactError, match=message):
        encode_metadata(_valid() | change)
