"""Installing the project as a user would: no C compiler, one import root, beside same-named packages.

Each test builds a fresh venv and installs a copy of what a source distribution ships, with
``CC=/bin/false`` so that anything needing a compiler fails. PyPI's ``trainer``, ``schemas`` and
``worker`` (other projects' packages with our folders' names) are installed beside ours: our code
imports only as ``ecg_anomaly.*``, so neither shadows the other and removing theirs leaves ours whole.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import REPO

SHIPPED = ("pyproject.toml", "README.md", "LICENSE", "ecg_anomaly", "schemas", "worker", "trainer")
FOREIGN = ("trainer==0.0.36", "schemas==0.7.1", "worker==2018.4.1")  # same names, other projects


def _source(tmp_path: Path) -> Path:
    """What the project's own files are, and nothing else (no build output, no caches)."""
    src = tmp_path / "src"
    src.mkdir()
    for item in SHIPPED:
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, src / item, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy(REPO / item, src / item)
    return src


def _venv(tmp_path: Path, name: str) -> Path:
    venv = tmp_path / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return venv / "bin"


def _pip(bin_dir: Path, *args: str) -> None:
    env = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", *args],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _python(bin_dir: Path, code: str) -> str:
    result = subprocess.run(
        [str(bin_dir / "python"), "-c", code], capture_output=True, text=True, cwd="/", timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_base_install_needs_no_compiler_and_lives_beside_same_named_packages(tmp_path: Path) -> None:
    bin_dir = _venv(tmp_path, "venv")
    _pip(bin_dir, str(_source(tmp_path)))
    help_text = subprocess.run(
        [str(bin_dir / "ecg-anomaly"), "worker", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--bootstrap-servers" in help_text
    # replay's default data is an extra away: one line that says which, not a traceback
    replay = subprocess.run(
        [str(bin_dir / "ecg-anomaly"), "replay", "--bootstrap-servers", "127.0.0.1:9"],
        capture_output=True,
        text=True,
    )
    assert replay.returncode != 0 and "ecg-anomaly[ecg5000]" in replay.stderr, replay.stderr
    assert "Traceback" not in replay.stderr and len(replay.stderr.strip().splitlines()) == 1
    site = Path(_python(bin_dir, "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    ours = sorted(
        p.name
        for p in site.iterdir()
        if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"
    )
    assert "ecg_anomaly" in ours and not {"worker", "trainer", "schemas"} & set(ours)

    _pip(bin_dir, "--no-deps", *FOREIGN)
    check = (  # theirs stay theirs (not imported: PyPI's trainer needs torch), ours import as ours
        "import importlib.util as u; "
        "import ecg_anomaly.worker.loop, ecg_anomaly.trainer.presets, ecg_anomaly.schemas.messages as m; "
        "theirs = [u.find_spec(n).origin for n in ('trainer', 'schemas', 'worker')]; "
        "assert all('ecg_anomaly' not in path for path in theirs), theirs; "
        "assert m.beat_schema()['title']; print('ok')"
    )
    assert _python(bin_dir, check).strip() == "ok"
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "uninstall", "--quiet", "-y", "schemas", "trainer", "worker"],
        check=True,
    )
    assert _python(
        bin_dir, "import ecg_anomaly.schemas.messages as m; print(m.beat_schema()['title'])"
    ).strip()


@pytest.mark.timeout(900)
def test_the_train_extra_installs_without_a_compiler(tmp_path: Path) -> None:
    bin_dir = _venv(tmp_path, "venv")
    _pip(bin_dir, str(_source(tmp_path)) + "[train]")
    out = _python(bin_dir, "import tensorflow, tf2onnx, ecg_anomaly.trainer.train; print('ok')")
    assert out.strip().endswith("ok")
