"""The fused score's numpy reference: code-space nearest neighbours, the bank, leave-one-out, the fusion."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_anomaly.trainer import latent
from ecg_anomaly.trainer.errors import TrainingError


def test_knn_distance_is_the_mean_distance_to_the_k_nearest() -> None:
    bank = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]], dtype=np.float32)
    codes = np.array([[0.0, 0.0], [3.0, 0.0]], dtype=np.float32)
    assert latent.knn_distance(codes, bank, 1).tolist() == [0.0, 3.0]
    assert latent.knn_distance(codes, bank, 2).tolist() == pytest.approx([2.5, 3.5])  # (0+5)/2, (3+4)/2


def test_knn_distance_is_exact_where_float32_cancels() -> None:
    """Codes far from the origin and close to each other: |a|²-2ab+|b|² in float32 loses the answer."""
    offset = np.full((1, 32), 100.0)
    bank = (offset + np.eye(32)[:4] * 1e-3).astype(np.float32)
    codes = (offset + np.eye(32)[4:5] * 1e-3).astype(np.float32)
    expected = np.sqrt(2) * 1e-3  # two unit offsets of 1e-3 apart
    assert latent.knn_distance(codes, bank, 1)[0] == pytest.approx(expected, rel=1e-3)
    a, b = codes[0], bank
    naive = np.sqrt(np.maximum((a * a).sum() - 2 * b @ a + (b * b).sum(axis=1), 0)).min()
    assert abs(naive - expected) > 1e-4  # what the exact recomputation in the graph avoids


def test_own_row_leaves_a_beat_out_of_its_own_neighbours() -> None:
    bank = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
    codes = np.array([[1.0], [1.0]], dtype=np.float32)
    own = np.array([1, -1])  # the first code is bank row 1; the second is not in the bank
    assert latent.knn_distance(codes, bank, 1, own).tolist() == [1.0, 0.0]


def test_bank_keeps_everything_or_a_seeded_subset_and_finds_its_members() -> None:
    assert latent.choose_bank(5, 10, seed=1).tolist() == [0, 1, 2, 3, 4]
    kept = latent.choose_bank(100, 10, seed=1)
    assert kept.size == 10 and np.all(np.diff(kept) > 0)
    assert np.array_equal(kept, latent.choose_bank(100, 10, seed=1))
    rows = latent.own_rows(np.arange(100), kept)
    assert np.array_equal(np.flatnonzero(rows >= 0), kept)
    assert np.array_equal(rows[kept], np.arange(10))


def test_fusion_is_a_weighted_geometric_mean_in_error_units() -> None:
    score = latent.LatentScore(np.zeros((2, 3), np.float32), 1, 0.25, rmse_ref=0.02, distance_ref=0.5)
    # A beat as typical as the held-out normals scores rmse_ref.
    assert latent.fuse(np.array([0.02]), np.array([0.5]), score)[0] == pytest.approx(0.02)
    # Twice the error and 16x the distance: 0.02 * 2**0.25 * 16**0.75.
    assert latent.fuse(np.array([0.04]), np.array([8.0]), score)[0] == pytest.approx(0.02 * 2**0.25 * 8)
    plain = latent.LatentScore(np.zeros((2, 3), np.float32), 1, 1.0, rmse_ref=0.02, distance_ref=0.5)
    assert latent.fuse(np.array([0.07]), np.array([9.0]), plain)[0] == pytest.approx(0.07)


def test_a_beat_on_top_of_a_training_normal_scores_the_distance_floor_not_zero() -> None:
    score = latent.LatentScore(np.zeros((2, 3), np.float32), 1, 0.25, rmse_ref=0.02, distance_ref=0.5)
    floor = 0.02 * latent.DISTANCE_FLOOR**0.75
    fused = latent.fuse(
        np.array([0.02, 0.02, 0.02]), np.array([0.0, 1e-6, 0.5 * latent.DISTANCE_FLOOR]), score
    )
    assert fused == pytest.approx([floor, floor, floor])
    assert score.metadata()["distance_floor"] == latent.DISTANCE_FLOOR


def test_calibration_uses_held_out_medians_and_refuses_a_degenerate_one() -> None:
    bank = np.array([[0.0], [10.0]], dtype=np.float32)
    errors = np.array([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]], dtype=np.float32)
    held_out = latent.Beats(errors, np.array([[1.0], [2.0], [9.0]], dtype=np.float32))
    score = latent.calibrate(bank, held_out, neighbours=1, rmse_weight=0.2)
    assert (score.rmse_ref, score.distance_ref) == (pytest.approx(0.2), pytest.approx(1.0))
    assert score.metadata()["bank_size"] == 2 and score.metadata()["code_size"] == 1
    with pytest.raises(TrainingError, match="duplicate a training beat"):
        latent.calibrate(bank, latent.Beats(errors, np.zeros((3, 1), np.float32)), 1, 0.2)


def test_k_is_chosen_on_held_out_beats_and_recorded() -> None:
    """A bank with one mislabelled member (an abnormal beat among normals) next to the abnormal beats:
    with k = 1 they look normal, with k = 2 the mislabelled one is outvoted."""
    rng = np.random.default_rng(4)
    normal_codes = rng.normal(0, 1, (200, 2))
    bank = np.vstack([normal_codes[:150], [[8.0, 8.0]]]).astype(np.float32)
    errors = np.full((50, 4), 0.1, np.float32)
    held_out = latent.Beats(errors, normal_codes[150:].astype(np.float32))
    abnormal = latent.Beats(errors, (np.array([8.0, 8.0]) + rng.normal(0, 0.05, (50, 2))).astype(np.float32))
    chosen = latent.select(bank, held_out, abnormal, (1, 2, 3), rmse_weight=0.0)
    aucs = chosen.selection
    assert (
        aucs["1"] < aucs["2"]
        and chosen.neighbours in (2, 3)
        and aucs[str(chosen.neighbours)] == max(aucs.values())
    )
    assert chosen.metadata()["neighbours_validation_roc_auc"] == aucs
    fixed = latent.select(bank, held_out, abnormal, (1,), rmse_weight=0.0)
    assert fixed.neighbours == 1 and list(fixed.selection) == ["1"]


def test_subspace_residual_is_what_the_principal_components_leave() -> None:
    rng = np.random.default_rng(2)
    line = np.outer(rng.normal(0, 1, 200), np.array([1.0, 1.0, 0.0, 0.0]) / np.sqrt(2)) + 0.5
    subspace = latent.Subspace.fit(line, components=1, weight=0.25)
    assert subspace.residual(line).max() < 1e-5  # the normals lie in it
    off = np.array([[0.5, 0.5, 2.5, 0.5]])  # 2 from the mean along a direction the components miss
    assert subspace.residual(off)[0] == pytest.approx(np.sqrt(4 / 4), rel=1e-5)
    assert subspace.metadata() == {"components": 1, "weight": 0.25, "reference": 0.0}


def test_subspace_is_a_third_factor_calibrated_on_held_out_beats() -> None:
    rng = np.random.default_rng(3)
    fitted = rng.normal(0, 1, (100, 6))
    subspace = latent.Subspace.fit(fitted, components=2, weight=0.5)
    held = rng.normal(0, 1, (40, 6))
    errors = np.full((40, 6), 0.1, np.float32)
    bank = rng.normal(0, 1, (30, 3)).astype(np.float32)
    held_out = latent.Beats(errors, rng.normal(0, 1, (40, 3)).astype(np.float32), normalised=held)
    score = latent.calibrate(bank, held_out, 1, rmse_weight=0.2, subspace=subspace)
    assert score.subspace is not None
    assert score.subspace.reference == pytest.approx(float(np.median(subspace.residual(held))))
    assert score.metadata()["subspace"]["components"] == 2
    assert [float(e) for e in latent.exponents(score)] == pytest.approx([0.1, 0.4, 0.5])
    plain = latent.calibrate(bank, held_out, 1, rmse_weight=0.2)
    residual = subspace.residual(held) / np.float32(score.subspace.reference)
    expected = held_out.scores(plain)
    # Same error and distance: the plain score's two factors, re-weighted by 1 - p, times the residual's.
    two = expected / np.float32(plain.rmse_ref)
    assert held_out.scores(score) == pytest.approx(plain.rmse_ref * two**0.5 * residual**0.5, rel=1e-5)
    with pytest.raises(ValueError, match="normalised beats"):
        latent.fuse(np.array([0.1]), np.array([1.0]), score)


def _known_abnormal_setting() -> tuple[np.ndarray, latent.Beats, latent.KnownAbnormal]:
    rng = np.random.default_rng(5)
    bank = rng.normal(0, 1, (60, 2)).astype(np.float32)
    held_out = latent.Beats(np.full((40, 4), 0.1, np.float32), rng.normal(0, 1, (40, 2)).astype(np.float32))
    known = latent.KnownAbnormal(rng.normal(6, 0.5, (30, 2)).astype(np.float32), weight=0.3)
    return bank, held_out, known


def test_known_abnormal_factor_raises_the_score_by_the_clipped_distance_ratio() -> None:
    bank, held_out, known = _known_abnormal_setting()
    score = latent.calibrate(bank, held_out, 1, rmse_weight=0.2, known_abnormal=known)
    assert score.known_abnormal is not None
    reference = float(np.median(latent.knn_distance(held_out.codes, known.bank, 1)))
    assert score.known_abnormal.reference == pytest.approx(reference)
    assert score.metadata()["known_abnormal"] == {
        "bank_size": 30,
        "weight": 0.3,
        "reference": score.known_abnormal.reference,
        "floor": latent.ABNORMAL_FLOOR,
    }
    assert [float(e) for e in latent.exponents(score)] == pytest.approx([0.2, 0.8, 0.0])
    plain = latent.calibrate(bank, held_out, 1, rmse_weight=0.2)
    ratio = score.known_abnormal.ratio(held_out.codes)
    assert ratio.max() == 1 and ratio.min() < 1  # the farther half of the normals keep their score
    assert held_out.scores(score) == pytest.approx(held_out.scores(plain) / ratio**0.3, rel=1e-5)
    # A beat on top of a known abnormal beat: the ratio is floored, the score finite and higher.
    on_top = score.known_abnormal.ratio(known.bank[:1])
    assert on_top.tolist() == [pytest.approx(latent.ABNORMAL_FLOOR)]
    with pytest.raises(ValueError, match="known abnormal"):
        latent.fuse(np.array([0.1]), np.array([1.0]), score)


def test_a_known_abnormal_beat_is_measured_without_its_own_code() -> None:
    bank, held_out, _ = _known_abnormal_setting()
    grid = np.array([[x, y] for x in (4.0, 8.0, 12.0) for y in (4.0, 8.0)], np.float32)  # 4 apart
    known = latent.KnownAbnormal(grid, weight=0.3)
    score = latent.calibrate(bank, held_out, 1, rmse_weight=0.2, known_abnormal=known)
    assert score.known_abnormal is not None
    members = known.bank[:5]
    itself = score.known_abnormal.ratio(members)
    without = score.known_abnormal.ratio(members, own_row=np.arange(5))
    assert np.all(itself == np.float32(latent.ABNORMAL_FLOOR)) and np.all(without > itself)
    expected = latent.knn_distance(members, known.bank, 1, np.arange(5)) / np.float32(
        score.known_abnormal.reference
    )
    assert without == pytest.approx(np.clip(expected, latent.ABNORMAL_FLOOR, 1))


def test_known_abnormal_beats_raise_the_scores_of_beats_like_them_and_lower_none() -> None:
    """Three beats with the same error and normal-bank distance: the one near the known abnormal
    beats scores higher; one as far from them as a typical normal and one far beyond both keep it."""
    bank, held_out, known = _known_abnormal_setting()
    score = latent.calibrate(bank, held_out, 1, rmse_weight=0.2, known_abnormal=known)
    assert score.known_abnormal is not None
    codes = np.array([[5.5, 5.5], [-3.0, -3.0], [-300.0, -300.0]], np.float32)
    ratio = score.known_abnormal.ratio(codes)
    errors, distances = np.full(3, 0.1), np.ones(3)
    fused = latent.fuse(errors, distances, score, abnormal_ratio=ratio)
    unraised = latent.fuse(errors, distances, latent.calibrate(bank, held_out, 1, rmse_weight=0.2))
    assert ratio[0] < 1 and fused[0] > unraised[0]
    assert ratio[1:].tolist() == [1, 1] and fused[1:] == pytest.approx(unraised[1:])


def test_the_known_abnormal_weight_is_a_fraction() -> None:
    from ecg_anomaly.base.errors import ConfigError
    from ecg_anomaly.trainer.presets import PRESETS

    with pytest.raises(ConfigError, match=r"abnormal weight must be in \[0, 1\]"):
        PRESETS["default"].with_overrides(abnormal_weight=1.5)
    assert PRESETS["default"].with_overrides(abnormal_weight=0.0).abnormal_weight == 0.0
