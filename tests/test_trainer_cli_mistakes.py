"""Every trainer command mistake is one line on stderr and a non-zero exit, never a traceback; and
``train`` finds each one before training starts (a guard fails the test if fitting ever begins)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ecg_anomaly.cli import main
from ecg_anomaly.schemas.datasets import load_dataset

L = 140


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small beat files, each wrong in one way (or right, for the commands' other mistakes)."""
    root = tmp_path_factory.mktemp("mistakes")
    ecg = load_dataset()
    rows = np.r_[np.flatnonzero(ecg.is_normal)[:60], np.flatnonzero(~ecg.is_normal)[:40]]
    beats, labels = ecg.beats[rows].astype(np.float64), ecg.is_normal[rows]

    def csv(name: str, values: np.ndarray, label: np.ndarray | None = None, cell: str | None = None) -> Path:
        lines = []
        for i, beat in enumerate(values):
            fields = [repr(float(v)) for v in beat]
            if cell is not None and i == 7:
                fields[12] = cell
            lines.append(",".join(fields + ([] if label is None else [str(int(label[i]))])))
        (root / name).write_text("\n".join(lines) + "\n")
        return root / name

    (root / "a-file").write_text("not a folder\n")
    (root / "folder").mkdir()
    (root / "not-onnx.onnx").write_text("not a model\n")
    return {
        "good": csv("good.csv", beats, labels),
        "unlabelled": csv("unlabelled.csv", beats),
        "beyond-float32": csv("beyond.csv", beats, labels, cell="1e39"),
        "one-huge-cell": csv("huge.csv", beats, labels, cell="3e38"),
        "constant": csv("constant.csv", np.full_like(beats, 0.25), labels),
        "normal-only": csv("normal.csv", beats[labels], labels[labels]),
        "abnormal-only": csv("abnormal.csv", beats[~labels], labels[~labels]),
        "short-rows": csv("short.csv", beats[:, :100], labels),
        "a-file": root / "a-file",
        "folder": root / "folder",
        "not-onnx": root / "not-onnx.onnx",
        "missing": root / "missing.csv",
    }


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.artifact import build_small_artifact

    return build_small_artifact(tmp_path_factory.mktemp("model"))


Argv = Callable[[dict[str, Path], Path], list[str]]

MISTAKES: list[tuple[str, Argv, int, str]] = [
    # (id, argv from the files and the model, exit status, what the one line must say)
    (
        "q-out-of-range",
        lambda f, m: ["train", "--threshold-policy", "percentile", "--threshold-q", "150"],
        2,
        "--threshold-q 150.0: must be in (0, 100]",
    ),
    (
        "rate-out-of-range",
        lambda f, m: ["train", "--threshold-policy", "false_alarm_rate", "--threshold-rate", "1.5"],
        2,
        "--threshold-rate 1.5: must be in [0, 1)",
    ),
    (
        "k-not-finite",
        lambda f, m: ["train", "--preset", "tutorial", "--threshold-k", "nan"],
        2,
        "--threshold-k nan: must be a finite number",
    ),
    (
        "param-of-another-policy",
        lambda f, m: ["train", "--threshold-k", "2"],
        2,
        "--threshold-k does not apply to threshold policy smoothed_f1",
    ),
    ("zero-epochs", lambda f, m: ["train", "--epochs", "0"], 2, "epochs and batch size must be at least 1"),
    (
        "negative-batch",
        lambda f, m: ["train", "--batch-size", "-4"],
        2,
        "epochs and batch size must be at least 1",
    ),
    (
        "zero-learning-rate",
        lambda f, m: ["train", "--learning-rate", "0"],
        2,
        "learning rate must be a positive",
    ),
    (
        "validation-too-large",
        lambda f, m: ["train", "--validation-fraction", "0.95"],
        2,
        "validation fraction",
    ),
    ("negative-patience", lambda f, m: ["train", "--patience", "-3"], 2, "patience must be at least 1"),
    (
        "encoder-for-conv",
        lambda f, m: ["train", "--encoder", "64"],
        2,
        "encoder layer sizes are for the dense",
    ),
    (
        "encoder-not-numbers",
        lambda f, m: ["train", "--encoder", "64,x"],
        2,
        "expected comma-separated integers",
    ),
    ("unknown-preset", lambda f, m: ["train", "--preset", "huge"], 2, "invalid choice: 'huge'"),
    ("test-size-too-large", lambda f, m: ["train", "--test-size", "1.5"], 2, "test size 1.5 leaves no"),
    ("negative-seed", lambda f, m: ["train", "--seed", "-1"], 2, "--seed -1: must be 0 or more"),
    ("bad-model-version", lambda f, m: ["train", "--model-version", "v 1/2"], 2, "--model-version 'v 1/2'"),
    (
        "out-dir-is-a-file",
        lambda f, m: ["train", "--out-dir", str(f["a-file"])],
        2,
        "exists and is not a directory",
    ),
    (
        "out-dir-under-a-file",
        lambda f, m: ["train", "--out-dir", str(f["a-file"] / "sub")],
        2,
        "cannot write there",
    ),
    ("data-missing", lambda f, m: ["train", "--data", str(f["missing"])], 1, "missing.csv: cannot read"),
    (
        "data-beyond-float32",
        lambda f, m: ["train", "--data", str(f["beyond-float32"])],
        1,
        "beyond.csv: row 8, column 13: '1e39' is outside the float32 range",
    ),
    (
        "data-one-huge-cell",
        lambda f, m: ["train", "--data", str(f["one-huge-cell"]), "--test-size", "0.1"],
        1,
        "huge.csv: row 8, column 13: 3e+38 is far outside the other training values",
    ),
    (
        "data-constant",
        lambda f, m: ["train", "--data", str(f["constant"])],
        1,
        "every training value is 0.25",
    ),
    (
        "data-normal-only",
        lambda f, m: ["train", "--data", str(f["normal-only"])],
        1,
        "the training split has no abnormal rows: threshold policy smoothed_f1 needs them",
    ),
    (
        "data-abnormal-only",
        lambda f, m: ["train", "--data", str(f["abnormal-only"])],
        1,
        "the training split has no normal rows",
    ),
    (
        "data-unlabelled",
        lambda f, m: ["train", "--data", str(f["unlabelled"])],
        1,
        "unlabelled.csv: row 1, column 141: missing",
    ),
    (
        "evaluate-out-in-missing-folder",
        lambda f, m: [
            "evaluate",
            "--model",
            str(m),
            "--data",
            str(f["good"]),
            "--out",
            str(f["missing"].parent / "no" / "m.json"),
        ],
        2,
        "does not exist",
    ),
    (
        "evaluate-model-missing",
        lambda f, m: ["evaluate", "--model", str(f["missing"]), "--data", str(f["good"])],
        1,
        "missing.csv: No such file",
    ),
    (
        "evaluate-model-not-onnx",
        lambda f, m: ["evaluate", "--model", str(f["not-onnx"]), "--data", str(f["good"])],
        1,
        "is not a loadable ONNX model",
    ),
    (
        "evaluate-negative-threshold",
        lambda f, m: ["evaluate", "--model", str(m), "--data", str(f["good"]), "--threshold", "-1"],
        2,
        "a threshold is a positive finite number",
    ),
    (
        "evaluate-unlabelled",
        lambda f, m: ["evaluate", "--model", str(m), "--data", str(f["unlabelled"])],
        1,
        "unlabelled.csv: row 1, column 141: missing",
    ),
    (
        "score-out-is-a-folder",
        lambda f, m: ["score", "--model", str(m), "--data", str(f["good"]), "--out", str(f["folder"])],
        2,
        "is a directory, expected a file name",
    ),
    (
        "score-short-rows",
        lambda f, m: [
            "score",
            "--model",
            str(m),
            "--data",
            str(f["short-rows"]),
            "--out",
            str(f["folder"] / "s.csv"),
        ],
        1,
        "short.csv: row 1, column 102: missing",
    ),
    (
        "score-no-out",
        lambda f, m: ["score", "--model", str(m), "--data", str(f["good"])],
        2,
        "the following arguments are required: --out",
    ),
]


@pytest.mark.parametrize(
    ("argv", "status", "message"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES]
)
def test_a_mistake_is_one_line_and_a_non_zero_exit_before_training(
    argv: Argv,
    status: int,
    message: str,
    files: dict[str, Path],
    model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def training_started(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started: the mistake was not caught before it")

    monkeypatch.setattr("ecg_anomaly.trainer.train.fit", training_started)
    capsys.readouterr()
    try:
        code = main(argv(files, model))
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    err = capsys.readouterr().err.strip()
    assert code == status, err
    assert "\n" not in err and "Traceback" not in err, err
    assert message in err, err
