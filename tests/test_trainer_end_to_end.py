"""Train a tiny configuration through the CLI, then check the artifact, the report, repeatability,
and that the test split cannot influence training, early stopping or the threshold.

TensorFlow is imported once per session; each tiny training takes a few seconds.
"""

from __future__ import annotations

import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from ecg_anomaly.cli import main
from ecg_anomaly.schemas.datasets import Dataset, load_dataset, split_train_test
from ecg_anomaly.trainer.evaluation import evaluate
from ecg_anomaly.trainer.presets import PRESETS
from ecg_anomaly.trainer.report import PLOTS
from ecg_anomaly.trainer.scoring import ScoringModel
from ecg_anomaly.trainer.train import TrainResult, train

SEED = 3
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras 3.15


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-run")
    argv = ["train", "--preset", "tiny", "--seed", str(SEED), "--out-dir", str(out), "--quiet"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def ecg5000() -> Dataset:
    return load_dataset()


@pytest.fixture(scope="module")
def test_split(ecg5000: Dataset) -> Dataset:
    return split_train_test(ecg5000, 0.2, 21)[1]


def _train(dataset: Dataset, out: Path) -> TrainResult:
    return train(PRESETS["tiny"], dataset, out, seed=SEED, quiet=True, report=False)


def test_artifact_loads_in_onnxruntime_and_separates_the_test_split(
    cli_run: Path, test_split: Dataset
) -> None:
    model = ScoringModel.load(cli_run / "model.onnx")
    scores, sample_error = model.score(test_split.beats)
    assert scores.dtype == np.float32 and sample_error.shape == test_split.beats.shape
    metrics = evaluate(scores, test_split.is_anomaly, model.metadata.threshold)
    assert metrics["roc_auc"] > 0.9
    assert metrics["anomaly_positive"]["accuracy"] > 0.8
    assert model.metadata.metrics["roc_auc"] == pytest.approx(metrics["roc_auc"])
    assert np.allclose(sample_error.mean(axis=1), scores, atol=1e-6)


def test_metrics_json_matches_the_artifact(cli_run: Path) -> None:
    document = json.loads((cli_run / "metrics.json").read_text())
    meta = ScoringModel.load(cli_run / "model.onnx").metadata
    assert document["metrics"]["threshold"] == meta.threshold
    assert document["threshold_policy"] == meta.threshold_policy == "max_f1"
    assert document["training"]["split"] == {"test_size": 0.2, "random_state": 21}
    assert document["metrics"]["training_time_s"] > 0
    assert set(document["metrics"]["recall_by_class"]) == {"2", "3", "4", "5"}
    assert (cli_run / "model.keras").stat().st_size > 0


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.extend(value for name, value in attrs if name == "src" and value)


def test_report_links_every_plot_and_every_plot_is_a_real_png(cli_run: Path) -> None:
    parser = _Images()
    parser.feed((cli_run / "report.html").read_text())
    assert parser.sources == [name for name, _ in PLOTS]
    for name in parser.sources:
        data = (cli_run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = struct.unpack(">II", data[16:24])
        assert width > 300 and height > 200, name
        assert len(data) > 5_000, name  # an empty figure is ~2 kB


def test_evaluate_command_reproduces_the_training_metrics(
    cli_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, test = split_train_test(load_dataset(), 0.2, 21)
    data = tmp_path / "test.tsv"
    rows = (
        "\t".join([str(c), *(repr(float(v)) for v in beat)])
        for c, beat in zip(test.classes, test.beats, strict=True)
    )
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "metrics.json"
    assert (
        main(["evaluate", "--model", str(cli_run / "model.onnx"), "--data", str(data), "--out", str(out)])
        == 0
    )
    assert "ROC AUC" in capsys.readouterr().out
    trained = json.loads((cli_run / "metrics.json").read_text())["metrics"]
    evaluated = json.loads(out.read_text())["metrics"]
    for key in (
        "roc_auc",
        "pr_auc",
        "anomaly_positive",
        "normal_positive",
        "confusion_matrix",
        "recall_by_class",
    ):
        assert evaluated[key] == trained[key], key  # same artifact, same beats: identical


def test_score_command_writes_scores_and_flags(cli_run: Path, tmp_path: Path, test_split: Dataset) -> None:
    data = tmp_path / "beats.csv"
    data.write_text(
        "\n".join(",".join(repr(float(v)) for v in beat) for beat in test_split.beats[:50]) + "\n"
    )
    out = tmp_path / "scores.csv"
    assert (
        main(["score", "--model", str(cli_run / "model.onnx"), "--data", str(data), "--out", str(out)]) == 0
    )
    lines = out.read_text().splitlines()
    assert lines[0] == "index,score,anomaly" and len(lines) == 51
    model = ScoringModel.load(cli_run / "model.onnx")
    expected, _ = model.score(test_split.beats[:50])
    written = np.array([float(line.split(",")[1]) for line in lines[1:]])
    flags = np.array([int(line.split(",")[2]) for line in lines[1:]])
    assert np.allclose(written, expected, rtol=1e-6)
    assert (flags == (expected > model.metadata.threshold)).all()


def test_same_seed_same_threshold_and_metrics(cli_run: Path, ecg5000: Dataset, tmp_path: Path) -> None:
    again = _train(ecg5000, tmp_path)
    first = ScoringModel.load(cli_run / "model.onnx").metadata
    assert again.threshold.value == first.threshold
    for key in ("roc_auc", "pr_auc", "anomaly_positive", "confusion_matrix"):
        assert again.metrics[key] == first.metrics[key], key


def test_test_split_cannot_influence_training_or_threshold(
    cli_run: Path, ecg5000: Dataset, test_split: Dataset, tmp_path: Path
) -> None:
    """House rule: scramble every test-split row (values and labels); training must not notice."""
    _, test_index = split_train_test(Dataset(np.arange(len(ecg5000))[:, None], None, None, "index"), 0.2, 21)
    test_rows = test_index.beats[:, 0]
    rng = np.random.default_rng(0)
    beats = ecg5000.beats.copy()
    beats[test_rows] = rng.uniform(-3, 3, size=(test_rows.size, beats.shape[1])).astype(np.float32)
    is_normal = ecg5000.is_normal.copy()
    is_normal[test_rows] = ~is_normal[test_rows]
    classes = np.where(is_normal, 1, 2)
    scrambled = _train(Dataset(beats, is_normal, classes, "scrambled"), tmp_path)

    original = ScoringModel.load(cli_run / "model.onnx").metadata
    assert scrambled.threshold.value == original.threshold
    assert scrambled.training["epochs_run"] == original.training["epochs_run"]
    assert scrambled.metrics["roc_auc"] != original.metrics["roc_auc"]  # the test split did change
    rebuilt = ScoringModel.load(scrambled.artifact)
    assert (rebuilt.metadata.norm_min, rebuilt.metadata.norm_max) == (original.norm_min, original.norm_max)
    # Same weights: the real test beats score identically under both models.
    assert np.array_equal(
        rebuilt.score(test_split.beats)[0],
        ScoringModel.load(cli_run / "model.onnx").score(test_split.beats)[0],
    )
