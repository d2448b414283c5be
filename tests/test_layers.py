"""The layer contracts catch an import that runs up a layer (checked as make lint checks them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import REPO
from tests.test_install import SHIPPED

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(source: Path, target: Path) -> subprocess.CompletedProcess[str]:
    """make lint's layer check on ``source``: build it into ``target``, run the layers contract there."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(source / "pyproject.toml"), "--contract", "layers"],
        cwd=target,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("schemas/messages.py", "import ecg_anomaly.worker.loop"),  # contracts → worker
        ("worker/decode.py", "from ecg_anomaly.trainer import presets"),  # worker → trainer (siblings)
        ("ecg_anomaly/base/kafka.py", "import ecg_anomaly.schemas.messages"),  # base → contracts
        ("trainer/scoring.py", "from ecg_anomaly.tools import replay"),  # trainer → tools
    ],
)
def test_an_import_up_a_layer_fails_the_lint(tmp_path: Path, module: str, upward: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for item in SHIPPED:
        copy = shutil.copytree if (REPO / item).is_dir() else shutil.copy
        copy(REPO / item, source / item)  # type: ignore[operator]
    clean = _lint(source, tmp_path / "clean")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    path = source / module
    path.write_text(path.read_text() + f"\n{upward}  # noqa\n")
    broken = _lint(source, tmp_path / "broken")
    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout and "is not allowed to import" in broken.stdout, broken.stdout
