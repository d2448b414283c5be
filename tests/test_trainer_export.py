"""Export: ONNX/Keras parity, graph contract, metadata validation, atomic write, wild beats, the models."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from ecg_anomaly.schemas.artifact import ArtifactError
from ecg_anomaly.trainer.errors import ExportError
from ecg_anomaly.trainer.export import (
    ARGMAX_BLOCK,
    PARITY_TOLERANCE,
    KerasScorer,
    check_parity,
    with_metadata,
    write_artifact,
)
from ecg_anomaly.trainer.latent import ABNORMAL_FLOOR, KnownAbnormal, LatentScore, Subspace
from ecg_anomaly.trainer.presets import PRESETS
from ecg_anomaly.trainer.scoring import ScoringModel
from tests.support.artifact import build_small_artifact, load_test_split

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras 3.15


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_artifact(tmp_path_factory.mktemp("small"))


def _keras_scorer(artifact: Path) -> KerasScorer:
    """The artifact's Keras model and the score's constants as metadata records them (no bank)."""
    import keras

    meta = ScoringModel.load(artifact).metadata
    return KerasScorer(
        keras.models.load_model(artifact.parent / "model.keras"), meta.norm_min, meta.norm_max, "mae"
    )


def test_onnx_matches_keras_on_the_test_split(artifact: Path) -> None:
    model = ScoringModel.load(artifact)
    beats, _ = load_test_split()
    _, onnx_errors = model.score(beats)
    reference = _keras_scorer(artifact)(beats)
    assert np.max(np.abs(onnx_errors - reference.sample_error)) <= PARITY_TOLERANCE
    assert model.metadata.metrics["onnx_keras_max_abs_diff"] <= PARITY_TOLERANCE


@pytest.mark.parametrize("neighbours", [1, 2])
def test_onnx_nearest_normals_match_the_exact_reference(neighbours: int) -> None:
    """The graph's k-NN (float32 ranking, exact recomputation) against the float64 reference, on codes
    far from the origin where the float32 shortcut alone is off by far more than the tolerance. The
    nearest one alone (k = 1) is an arg-max in two steps (the bank of 300 padded to 320 columns),
    none of them over more than a block of columns, and no top-k."""
    import keras

    rng = np.random.default_rng(0)
    bank = (50 + rng.normal(0, 0.01, (300, 8))).astype(np.float32)
    inputs = keras.Input((140,))
    codes = keras.layers.Dense(8, name="embedding", kernel_initializer="zeros", bias_initializer="zeros")(
        inputs
    )
    model = keras.Model(inputs, keras.layers.Dense(140, activation="sigmoid")(codes))
    model.get_layer("embedding").bias.assign(bank[7] + 0.003)
    # distance_ref 0.01: the score is the distance in hundredths, well above the distance floor
    latent = LatentScore(bank, neighbours=neighbours, rmse_weight=0.0, rmse_ref=1.0, distance_ref=0.01)
    scorer = KerasScorer(model, -1.0, 1.0, "fused", latent)
    from ecg_anomaly.trainer.export import to_onnx

    proto = to_onnx(scorer, 140)
    assert any(n.op_type == "TopK" for n in proto.graph.node) == (neighbours > 1)
    if neighbours == 1:
        assert _arg_max_widths(proto) == [10, ARGMAX_BLOCK]  # 10 blocks, then one block's columns
        assert "GlobalMaxPool" not in {n.op_type for n in proto.graph.node}  # the blocks' maxima: ReduceMax
    session = ScoringModel.load(_with_test_metadata(proto, latent))
    beats = rng.normal(0, 1, (5, 140)).astype(np.float32)
    onnx_scores, _ = session.score(beats)
    check_parity(onnx_scores, scorer(beats).scores)
    assert onnx_scores[0] < 5  # every beat has the same code, next to bank row 7 (under 0.05 away)


def _arg_max_widths(proto: onnx.ModelProto) -> list[int]:
    """The number of columns each ``ArgMax`` of the graph reads, by shape inference."""
    graph = onnx.shape_inference.infer_shapes(proto).graph
    shapes = {v.name: v.type.tensor_type.shape.dim for v in graph.value_info}
    return sorted(shapes[n.input[0]][-1].dim_value for n in graph.node if n.op_type == "ArgMax")


@pytest.mark.parametrize("columns", [20, 300, 512])
def test_the_two_step_arg_max_finds_the_first_largest_column(columns: int) -> None:
    """The graph's arg-max in blocks against numpy's (the first of equal values wins): ties within a
    block and across blocks, the largest value in the last real column, padding that never wins."""
    import tensorflow as tf

    from ecg_anomaly.trainer.export import _first_largest

    blocks = -(-columns // ARGMAX_BLOCK)
    rng = np.random.default_rng(4)
    values = rng.normal(0, 1, (6, blocks * ARGMAX_BLOCK)).astype(np.float32)
    values[:, columns:] = np.finfo(np.float32).min
    values[0, [3, 5]] = 9  # a tie within the first block
    values[1, [columns - 1, columns // 2]] = 9  # a tie across blocks (within one for 20 columns)
    values[2] = np.where(np.arange(values.shape[1]) < columns, 2.0, values[2])  # every column ties
    values[3, columns - 1] = 9
    values[4, :columns] = -5.0  # every real value far below zero, the padding further still
    found = _first_largest(tf, tf.constant(values), blocks).numpy()
    np.testing.assert_array_equal(found, values.argmax(axis=1))
    assert found[1] == columns // 2 and found[2] == 0 and found[3] == columns - 1


@pytest.mark.parametrize("offset", [0.0, 5e-4])
def test_a_beat_on_a_normal_code_scores_the_floor_in_the_graph_too(offset: float) -> None:
    """k = 1 against the reference for a beat whose code duplicates a bank code (offset 0) or lies
    between two bank codes 1e-3 apart, far from the origin: where the arg-max's float32 ranking cannot
    tell them apart, both score the distance floor."""
    import keras

    from ecg_anomaly.trainer.export import to_onnx
    from ecg_anomaly.trainer.latent import DISTANCE_FLOOR, rmse

    rng = np.random.default_rng(3)
    bank = (50 + rng.normal(0, 0.01, (300, 8))).astype(np.float32)
    bank[8] = bank[7] + np.float32(1e-3) * np.eye(8, dtype=np.float32)[0]
    inputs = keras.Input((140,))
    codes = keras.layers.Dense(8, name="embedding", kernel_initializer="zeros", bias_initializer="zeros")(
        inputs
    )
    model = keras.Model(inputs, keras.layers.Dense(140, activation="sigmoid")(codes))
    model.get_layer("embedding").bias.assign(bank[7] + np.float32(offset) * np.eye(8, dtype=np.float32)[0])
    latent = LatentScore(bank, neighbours=1, rmse_weight=0.2, rmse_ref=1.0, distance_ref=1.0)
    scorer = KerasScorer(model, -1.0, 1.0, "fused", latent)
    session = ScoringModel.load(_with_test_metadata(to_onnx(scorer, 140), latent))
    beats = rng.normal(0, 1, (4, 140)).astype(np.float32)
    onnx_scores, _ = session.score(beats)
    reference = scorer(beats)
    check_parity(onnx_scores, reference.scores)
    expected = rmse(reference.sample_error) ** np.float32(0.2) * np.float32(DISTANCE_FLOOR) ** np.float32(0.8)
    np.testing.assert_allclose(reference.scores, expected, rtol=1e-5)


def test_onnx_subspace_factor_matches_the_reference() -> None:
    """The fused score's third factor (the residual outside the normals' principal components) in the
    graph against the numpy reference."""
    import keras

    rng = np.random.default_rng(1)
    inputs = keras.Input((140,))
    codes = keras.layers.Dense(8, name="embedding")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(140, activation="sigmoid")(codes))
    normals = rng.normal(0, 0.3, (60, 140)).astype(np.float32)
    subspace = Subspace.fit(normals, components=2, weight=0.4)
    bank = rng.normal(0, 1, (50, 8)).astype(np.float32)
    latent = LatentScore(
        bank, 2, 0.2, rmse_ref=0.3, distance_ref=1.0, subspace=replace(subspace, reference=0.3)
    )
    scorer = KerasScorer(model, -1.0, 1.0, "fused", latent)
    from ecg_anomaly.trainer.export import to_onnx

    session = ScoringModel.load(_with_test_metadata(to_onnx(scorer, 140), latent))
    beats = rng.normal(0, 0.5, (7, 140)).astype(np.float32)
    onnx_scores, _ = session.score(beats)
    reference = scorer(beats).scores
    check_parity(onnx_scores, reference)
    plain = KerasScorer(model, -1.0, 1.0, "fused", replace(latent, subspace=None))(beats).scores
    assert not np.allclose(reference, plain)  # the factor is there


def test_onnx_known_abnormal_factor_matches_the_reference() -> None:
    """The raise for beats close to a known abnormal code (the clipped distance ratio) in the graph
    against the numpy reference, for beats far from, near and on top of a known abnormal code."""
    import keras

    rng = np.random.default_rng(2)
    inputs = keras.Input((140,))
    codes = keras.layers.Dense(8, name="embedding")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(140, activation="sigmoid")(codes))
    beats = rng.normal(0, 0.5, (9, 140)).astype(np.float32)
    beat_codes = KerasScorer(model, -1.0, 1.0, "mae").codes(beats)
    known_bank = np.vstack([beat_codes[:2], beat_codes[2:4] + 0.05, rng.normal(0, 3, (40, 8))])
    known = KnownAbnormal(known_bank.astype(np.float32), weight=0.3, reference=2.0)
    bank = rng.normal(0, 1, (50, 8)).astype(np.float32)
    latent = LatentScore(bank, 2, 0.2, rmse_ref=0.3, distance_ref=1.0, known_abnormal=known)
    scorer = KerasScorer(model, -1.0, 1.0, "fused", latent)
    from ecg_anomaly.trainer.export import to_onnx

    session = ScoringModel.load(_with_test_metadata(to_onnx(scorer, 140), latent))
    onnx_scores, _ = session.score(beats)
    reference = scorer(beats).scores
    check_parity(onnx_scores, reference)
    plain = KerasScorer(model, -1.0, 1.0, "fused", replace(latent, known_abnormal=None))(beats).scores
    ratio = known.ratio(beat_codes)
    assert ratio[0] == np.float32(ABNORMAL_FLOOR) and np.all(ratio[4:] > ratio[0])  # on top, floored
    assert reference == pytest.approx(plain / ratio**0.3, rel=1e-5)


def _with_test_metadata(proto: object, latent: LatentScore) -> bytes:
    return with_metadata(
        proto,
        {
            "model_version": "test",
            "input_length": 140,
            "threshold": 1.0,
            "threshold_policy": "percentile",
            "threshold_params": {},
            "norm_min": -1.0,
            "norm_max": 1.0,
            "score": "rmse_latent_knn",
            "score_params": latent.metadata(),
            "metrics": {},
            "training": {},
            "library_versions": {"python": "3", "numpy": "2"},
            "created_at": "2026-01-01T00:00:00Z",
        },
    )


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


def test_the_convolutions_carry_their_bias_and_relu(artifact: Path) -> None:
    """The tiny preset's Conv1D layers as single Conv nodes (conv_fusion), not Conv → Squeeze → Add."""
    graph = onnx.load(artifact).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == len(PRESETS["tiny"].conv_channels)
    assert all(len(n.input) == 3 for n in convs)
    readers = {name: n.op_type for n in graph.node for name in n.input}
    assert [readers[n.output[0]] for n in convs] == ["Relu"] * len(convs)


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


@pytest.mark.parametrize("value", [3e38, -3.4e38, 1e30, 1e6])
def test_huge_legal_values_score_far_above_the_threshold_never_nan(artifact: Path, value: float) -> None:
    """float32 allows 3e38; unclipped, the network overflows to inf and NaN, and NaN > threshold is
    false: the beat would pass as normal. One such value in an ordinary beat must raise an alarm."""
    model = ScoringModel.load(artifact)
    beats, _ = load_test_split()
    wild = beats[:3].copy()
    wild[:, 70] = value
    scores, errors = model.score(wild)
    assert np.all(np.isfinite(scores)) and np.all(np.isfinite(errors))
    assert np.all(scores > 3 * model.metadata.threshold)


def test_metadata_records_everything_the_contract_asks(artifact: Path) -> None:
    meta = ScoringModel.load(artifact).metadata
    props = {p.key: p.value for p in onnx.load(str(artifact)).metadata_props}
    assert meta.input_length == 140 and meta.threshold > 0
    assert meta.threshold_policy == "smoothed_f1"
    assert meta.threshold_params["errors_from"] == "validation_normal+training_abnormal"
    uncertainty = json.loads(props["threshold_uncertainty"])
    low, high = uncertainty["interval_90"]
    assert low <= meta.threshold <= high and uncertainty["std"] > 0
    assert props["score"] == "rmse_latent_knn"
    assert json.loads(props["score_params"])["bank_size"] == PRESETS["tiny"].bank_size
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
    # Above 1 the tolerance is relative: float32 holds 7 digits of a large score, not 7 decimals.
    large = np.full(3, 40.0)
    assert check_parity(large + 2e-4, large) == pytest.approx(5e-6)
    with pytest.raises(ExportError, match="parity check failed"):
        check_parity(large + 1e-3, large)


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
