"""The trainer's command-line options, usage errors, and that evaluate/score stay free of TensorFlow."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from ecg_anomaly.cli import command_parser, main
from ecg_anomaly.trainer.commands.train import config_from_args

REPO = Path(__file__).resolve().parents[1]


def _args(*argv: str) -> argparse.Namespace:
    return command_parser("train").parse_args(argv)


def test_options_override_the_preset() -> None:
    config = config_from_args(
        _args(
            "--architecture",
            "dense",
            "--encoder",
            "64,32",
            "--embedding",
            "12",
            "--epochs",
            "7",
            "--patience",
            "0",
            "--plateau-patience",
            "3",
            "--score",
            "mae",
        )
    )
    assert (config.architecture, config.encoder, config.embedding) == ("dense", (64, 32), 12)
    assert config.epochs == 7
    assert (config.patience, config.plateau_patience, config.score) == (None, 3, "mae")
    assert config.preset == "default" and config.threshold_policy == "smoothed_f1"


@pytest.mark.parametrize(
    ("argv", "params"),
    [
        (["--threshold-policy", "percentile"], {"q": 99.0}),
        (["--threshold-policy", "percentile", "--threshold-q", "97.5"], {"q": 97.5}),
        (["--threshold-policy", "false_alarm_rate", "--threshold-rate", "0.02"], {"rate": 0.02}),
        (["--preset", "tutorial", "--threshold-k", "2"], {"k": 2.0}),
    ],
)
def test_threshold_options(argv: list[str], params: dict[str, float]) -> None:
    assert config_from_args(_args(*argv)).threshold_params == params


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threshold-policy", "percentile", "--threshold-k", "2"], "--threshold-k does not apply"),
        (["--preset", "tutorial", "--threshold-policy", "max_f1"], "max_f1 needs labelled validation data"),
        (["--preset", "tutorial", "--score", "fused"], "calibrated on held-out normals"),
        (["--preset", "tutorial", "--patience", "5"], "need a validation split"),
        (["--architecture", "dense", "--encoder", "64,0"], "layer sizes must be positive"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_evaluate_and_score_do_not_import_tensorflow(tmp_path: Path) -> None:
    """Both commands on a real artifact in a fresh interpreter, then check what it imported."""
    from tests.support.artifact import build_small_artifact, load_test_split

    model = build_small_artifact(tmp_path / "model")
    beats, is_anomaly = load_test_split()
    rows = (
        ",".join([*map(repr, map(float, b)), str(1 - a)])
        for b, a in zip(beats[:100], is_anomaly, strict=False)
    )
    data = tmp_path / "ecg.csv"
    data.write_text("\n".join(rows) + "\n")
    code = (
        "import sys\n"
        "from ecg_anomaly.cli import main\n"
        "model, data, out = sys.argv[1:]\n"
        "codes = [main(['evaluate', '--model', model, '--data', data]),\n"
        "         main(['score', '--model', model, '--data', data, '--out', out])]\n"
        "print(codes, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    argv = [sys.executable, "-c", code, str(model), str(data), str(tmp_path / "scores.csv")]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[0, 0] False False"
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 101
