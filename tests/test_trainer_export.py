"""Export: ONNX/Keras parity, graph contract, metadata validation, atomic write, the tutorial model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecg_anomaly.schemas.artifact import ArtifactError
from ecg_anomaly.trainer.errors import ExportError
from ecg_anomaly.trainer.export import (
    PARITY_TOLERANCE,
    check_parity,
    keras_scores,
    with_metadata,
    write_artifact,
)
from ecg_anomaly.trainer.presets import PRESETS
from ecg_anomaly.trainer.scoring import ScoringModel
from tests.support.artifact import build_small_artifact, load_test_split

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras 3.15


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_artifact(tmp_path_factory.mktemp("small"))


def test_onnx_matches_keras_on_the_test_split(artifact: Path) -> None:
    import keras

    model = ScoringModel.load(artifact)
    beats, _ = load_test_split()
    onnx_scores, _ = model.score(beats)
    reference = keras_scores(
        keras.models.load_model(artifact.parent / "model.keras"),
        beats,
        model.metadata.norm_min,
        model.metadata.norm_max,
    )
    assert np.max(np.abs(onnx_scores - reference)) <= PARITY_TOLERANCE
    assert model.metadata.metrics["onnx_keras_max_abs_diff"] <= PARITY_TOLERANCE


def test_graph_contract_and_dynamic_batch(artifact: Path) -> None:
    model = ScoringModel.load(artifact)
    (beats_input,) = model.session.get_inputs()
    assert beats_input.name == "beats" and beats_input.type == "tensor(float)"
    assert beats_input.shape[1] == 140 and not isinstance(beats_input.shape[0], int)
    assert {o.name for o in model.session.get_outputs()} == {"score", "sample_error"}
    beats, _ = load_test_split()
    full, _ = model.score(beats[:7])
    for n in (1, 3):
        part, errors = model.score(beats[:n])
        assert part.shape == (n,) and errors.shape == (n, 140)
        assert np.allclose(part, full[:n], atol=1e-7)


def test_normalisation_is_inside_the_graph(artifact: Path) -> None:
    model = ScoringModel.load(artifact)
    meta = model.metadata
    # The training minimum maps to 0 and the maximum to 1: a constant beat at norm_min has
    # sample_error equal to the reconstruction itself, which the sigmoid keeps in (0, 1).
    _, errors = model.score(np.full((1, 140), meta.norm_min, dtype=np.float32))
    assert np.all((errors > 0) & (errors < 1))
    # A beat far outside the training range scores far above the threshold.
    scores, _ = model.score(np.full((1, 140), meta.norm_max * 10, dtype=np.float32))
    assert scores[0] > 10 * meta.threshold


def test_metadata_records_everything_the_contract_asks(artifact: Path) -> None:
    meta = ScoringModel.load(artifact).metadata
    assert meta.input_length == 140 and meta.threshold > 0
    assert meta.threshold_policy == "max_f1" and meta.threshold_params["errors_from"] == "validation_labelled"
    assert set(meta.library_versions) >= {
        "python",
        "numpy",
        "tensorflow",
        "keras",
        "tf2onnx",
        "onnx",
        "onnxruntime",
    }
    assert meta.training["preset"] == "tiny" and meta.training["seed"] == 7
    assert meta.norm_min < 0 < meta.norm_max
    assert meta.metrics["roc_auc"] > 0.9


def test_invalid_metadata_is_refused_before_writing(artifact: Path) -> None:
    import onnx

    proto = onnx.load(str(artifact))
    props = {p.key: p.value for p in proto.metadata_props}
    assert "threshold" in props
    bad = {"model_version": "x", "input_length": 140, "threshold": -1.0}
    with pytest.raises(ArtifactError, match="threshold"):
        with_metadata(proto, bad)


def test_parity_check_fails_above_the_tolerance() -> None:
    reference = np.zeros(5, dtype=np.float32)
    assert check_parity(reference + 5e-6, reference) == pytest.approx(5e-6)
    with pytest.raises(ExportError, match="parity check failed"):
        check_parity(reference + np.array([0, 0, 2e-5, 0, 0], dtype=np.float32), reference)


def test_failed_write_leaves_the_previous_artifact_and_no_temp_file(artifact: Path, tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(artifact.read_bytes())
    beats, _ = load_test_split()
    scores, _ = ScoringModel.load(artifact).score(beats[:20])
    with pytest.raises(ExportError, match="parity"):
        write_artifact(artifact.read_bytes(), target, beats[:20], scores + 1e-3)
    with pytest.raises(ExportError, match="could not write"):
        write_artifact(b"not an onnx model", target, beats[:20], scores)
    assert target.read_bytes() == artifact.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_tutorial_preset_is_the_tutorial_model() -> None:
    import keras

    from ecg_anomaly.trainer.model import build_autoencoder

    config = PRESETS["tutorial"]
    assert (config.epochs, config.batch_size, config.loss, config.validation_fraction) == (
        20,
        512,
        "mae",
        0.0,
    )
    assert (config.threshold_policy, config.threshold_params, config.patience) == (
        "mean_std",
        {"k": 1.0},
        None,
    )
    model = build_autoencoder(config, 140)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [32, 16, 8, 16, 32, 140]
    assert [layer.activation.__name__ for layer in dense] == ["relu"] * 5 + ["sigmoid"]
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
