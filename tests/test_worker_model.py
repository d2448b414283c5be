"""Model artifact handling: start-up refusals through the real CLI, and hot reload (alone and live)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import orjson
import pytest

from ecg_anomaly.schemas.artifact import ArtifactError
from ecg_anomaly.worker.model import CALL_ROWS, ModelReloader, load_model
from tests.support.artifact import build_small_artifact, load_test_split
from tests.support.broker import REPO
from tests.support.worker import (
    WorkerProcess,
    env_without_worker_settings,
    produce_beats,
    read_topic,
    wait_for,
)


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_artifact(tmp_path_factory.mktemp("model"))


def _variant(model: Path, out: Path, **metadata: str) -> Path:
    """A copy of the artifact with some metadata values replaced (a different, valid file)."""
    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        if prop.key in metadata:
            prop.value = metadata[prop.key]
    onnx.save(proto, str(out))
    return out


def _replace(path: Path, content: bytes) -> None:
    """Atomic replace, as a Kubernetes ConfigMap or a deploy script would do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecg_anomaly.cli", "worker", "--http-port", "0", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env_without_worker_settings(),
    )


def test_a_large_batch_is_scored_in_calls_of_bounded_size(model_path: Path) -> None:
    """onnxruntime keeps the largest intermediates it has needed, so a batch is scored in calls of at
    most CALL_ROWS beats; the scores are the same as one call's."""
    model = load_model(model_path)
    split, _ = load_test_split()
    beats = np.resize(split, (2 * CALL_ROWS + 1, split.shape[1]))  # the split repeated: three calls
    whole, whole_errors = model.session.run(["score", "sample_error"], {"beats": beats})
    sizes: list[int] = []
    run = model.session.run

    class Counting:
        def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            sizes.append(len(feed["beats"]))
            return run(outputs, feed)

    model.session = Counting()  # type: ignore[assignment]
    for n in (1, CALL_ROWS, CALL_ROWS + 1, len(beats)):
        sizes.clear()
        scored = model.score(beats[:n])
        assert max(sizes) <= CALL_ROWS and sum(sizes) == n
        assert np.allclose(scored.score, whole[:n], rtol=1e-5, atol=1e-7)
        assert np.allclose(scored.sample_error, whole_errors[:n], rtol=1e-5, atol=1e-7)


def test_bad_model_file_stops_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not an onnx file")
    result = _cli("--model", str(bad))
    assert result.returncode == 1
    assert "not a loadable ONNX model" in result.stderr


def test_model_without_metadata_stops_start_up(model_path: Path, tmp_path: Path) -> None:
    proto = onnx.load(str(model_path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    result = _cli("--model", str(tmp_path / "bare.onnx"))
    assert result.returncode == 1
    assert "artifact metadata" in result.stderr and "required property" in result.stderr


def test_wrong_sha256_stops_start_up(model_path: Path) -> None:
    result = _cli("--model", str(model_path), "--model-sha256", "0" * 64)
    assert result.returncode == 1
    assert f"sha256 is {load_model(model_path).sha256}, expected {'0' * 64}" in result.stderr


def test_bad_option_stops_start_up_with_code_2(model_path: Path) -> None:
    result = _cli("--model", str(model_path), "--max-wait-ms", "soon")
    assert result.returncode == 2
    assert "--max-wait-ms" in result.stderr


def test_threshold_override(model_path: Path) -> None:
    model = load_model(model_path, threshold=0.5)
    assert model.threshold == 0.5 and model.metadata.threshold_params["override"] == 0.5


def test_reloader_swaps_only_validated_files(model_path: Path, tmp_path: Path) -> None:
    live = tmp_path / "model.onnx"
    shutil.copyfile(model_path, live)
    reloader = ModelReloader(live, "", None, 1)
    assert reloader.check() is None  # unchanged
    _replace(live, b"garbage")
    with pytest.raises(ArtifactError):
        reloader.check()
    assert reloader.check() is None  # a broken file is reported once, not on every check
    _replace(live, _variant(model_path, tmp_path / "v2.onnx", model_version="test-tiny-2").read_bytes())
    model = reloader.check()
    assert model is not None and model.version == "test-tiny-2"


@pytest.mark.kafka
def test_live_hot_reload_keeps_old_model_on_broken_file(
    kafka_bootstrap: str,
    model_path: Path,
    topic_factory: Callable[..., str],
    group_factory: Callable[..., str],
    tmp_path: Path,
) -> None:
    live = tmp_path / "model.onnx"
    shutil.copyfile(model_path, live)
    topic, scores = topic_factory(), topic_factory(prefix="scores")
    worker = WorkerProcess(
        kafka_bootstrap,
        live,
        topic,
        group_factory(),
        tmp_path / "worker.log",
        scores_topic=scores,
        reload_interval=0.2,
    ).start()
    beats, _ = load_test_split()
    try:
        worker.wait_ready()
        _replace(live, b"broken")
        wait_for(
            lambda: worker.metrics()['ecg_processing_errors_total{stage="model_reload"}'] == 1,
            30,
            "reload error",
        )
        produce_beats(kafka_bootstrap, topic, beats[:5])
        wait_for(
            lambda: worker.metrics()["ecg_beats_consumed_total"] == 5, 180, "beats scored by the old model"
        )
        _replace(
            live,
            _variant(
                model_path, tmp_path / "v2.onnx", model_version="test-tiny-2", threshold="0.5"
            ).read_bytes(),
        )
        wait_for(lambda: worker.metrics().get("ecg_model_threshold") == 0.5, 180, "the new model")
        produce_beats(kafka_bootstrap, topic, beats[5:10])
        wait_for(
            lambda: worker.metrics()["ecg_beats_consumed_total"] == 10, 180, "beats scored by the new model"
        )
        metrics = worker.metrics()
    finally:
        worker.stop()
    versions = [
        orjson.loads(r.value)["model_version"]
        for r in sorted(read_topic(kafka_bootstrap, scores), key=lambda r: r.offset)
    ]
    assert versions == ["test-tiny"] * 5 + ["test-tiny-2"] * 5
    assert metrics["ecg_model_reloads_total"] == 1
    assert [k for k, v in metrics.items() if k.startswith("ecg_model_info{") and v == 1] == [
        next(k for k in metrics if k.startswith("ecg_model_info{") and 'version="test-tiny-2"' in k)
    ]
