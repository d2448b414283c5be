"""The worker image's recipe, checked without a Docker engine: what the Dockerfile installs works alone."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.support.broker import REPO

DOCKER = REPO / "deploy" / "docker"
REQUIREMENTS = DOCKER / "worker-requirements.txt"
HEAVY = ("tensorflow", "keras", "tf2onnx", "onnx", "tf-keras", "scikit-learn", "matplotlib")
TEST_ONLY = ("kafka-python", "crc32c")  # the tests' own Kafka client; shipped code uses confluent-kafka


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"unpinned requirement: {line}"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_worker_requirements_are_pinned_and_light() -> None:
    pins = _pins()
    assert {"onnxruntime", "confluent-kafka", "numpy", "prometheus-client"} <= pins.keys()
    assert not set(HEAVY) & pins.keys()
    assert not set(TEST_ONLY) & pins.keys()


def test_dockerfiles_run_as_non_root_with_the_right_entrypoints() -> None:
    for name, entrypoint in [
        ("worker", '["ecg-anomaly", "worker"]'),
        ("trainer", '["ecg-anomaly", "train"]'),
    ]:
        text = (DOCKER / f"{name}.Dockerfile").read_text()
        assert re.search(r"^FROM python:3\.11-slim", text, re.M)
        users = re.findall(r"^USER (\S+)", text, re.M)
        assert users and not users[-1].startswith(("root", "0")), f"{name} image runs as root"
        assert f"ENTRYPOINT {entrypoint}" in text
    worker = (DOCKER / "worker.Dockerfile").read_text()
    assert "worker-requirements.txt" in worker and "--no-deps" in worker


def test_pinned_worker_install_runs_without_tensorflow(tmp_path: Path) -> None:
    """What the worker image does, in a fresh venv: pinned requirements, then the project without deps."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--requirement", str(REQUIREMENTS)], check=True)
    # Install from a copy holding only what the Dockerfile copies, so nothing else can leak in.
    src = tmp_path / "src"
    src.mkdir()
    for item in ("pyproject.toml", "README.md", "ecg_anomaly", "schemas", "worker", "trainer"):
        copy = shutil.copytree if (REPO / item).is_dir() else shutil.copy
        copy(
            REPO / item,
            src / item,
            **({"ignore": shutil.ignore_patterns("__pycache__", "*.so")} if (REPO / item).is_dir() else {}),
        )
    subprocess.run([*pip, "--no-deps", str(src)], check=True)

    help_text = subprocess.run(
        [str(venv / "bin" / "ecg-anomaly"), "worker", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--bootstrap-servers" in help_text and "--model" in help_text
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.lower()
    assert not [pkg for pkg in (*HEAVY, *TEST_ONLY) if f"\n{pkg}==" in f"\n{installed}"]
    # The tools run on the worker's install: with nothing listening, one line naming the cause.
    unreachable = ["--bootstrap-servers", "127.0.0.1:1", "--connect-timeout", "1"]
    watch = subprocess.run(
        [str(venv / "bin" / "ecg-anomaly"), "watch", *unreachable], capture_output=True, text=True, timeout=60
    )
    assert watch.returncode == 1 and watch.stderr.count("\n") == 1, watch.stderr
    assert "cannot reach Kafka at 127.0.0.1:1" in watch.stderr
    train = subprocess.run([str(venv / "bin" / "ecg-anomaly"), "train"], capture_output=True, text=True)
    assert train.returncode != 0 and "[train]" in train.stderr  # a clear message, not a traceback


TRAINER_REQUIREMENTS = DOCKER / "trainer-requirements.txt"
# .gitignore entries the build context needs: the model image copies artifacts/model.onnx.
CONTEXT_NEEDS = {"artifacts/", "*.onnx"}


def _pinned(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: unpinned requirement {line}"
            pins[_canonical(name)] = version
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(*extras: str) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += project["optional-dependencies"][extra]
    return {_canonical(re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0]) for spec in specs}


def test_trainer_image_installs_pinned_dependencies_before_the_sources() -> None:
    pins = _pinned(TRAINER_REQUIREMENTS)
    assert _declared("train") <= pins.keys(), _declared("train") - pins.keys()
    lines = [line.strip() for line in (DOCKER / "trainer.Dockerfile").read_text().splitlines()]
    install = next(i for i, line in enumerate(lines) if "--requirement" in line and line.startswith("RUN"))
    first_source = next(
        i for i, line in enumerate(lines) if re.match(r"COPY (pyproject|ecg_anomaly|worker)", line)
    )
    assert "trainer-requirements.txt" in " ".join(lines[:install])
    assert install < first_source, "a source change would reinstall every dependency"
    project_install = next(i for i, line in enumerate(lines) if "pip install" in line and i > install)
    assert "--no-deps" in lines[project_install], "the project's install must not resolve anything again"


def test_the_build_context_leaves_out_what_git_ignores() -> None:
    """.tools/ (Go-built kustomize), the venv, caches and build output are not the images' business."""
    ignored = [p for p in (REPO / ".gitignore").read_text().splitlines() if p and not p.startswith("#")]
    docker = {p.strip().rstrip("/") for p in (REPO / ".dockerignore").read_text().splitlines()}
    for pattern in ignored:
        if pattern in CONTEXT_NEEDS:
            continue
        name = pattern.rstrip("/")
        assert name in docker or f"**/{name}" in docker, f"{pattern} is in the Docker build context"
