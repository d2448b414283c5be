"""``ecg-anomaly demo`` end to end as ``make demo`` runs it: own broker, worker, feed, then nothing left."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ecg_anomaly.cli import main
from ecg_anomaly.tools.demo_stack import port_answers
from tests.support.artifact import build_small_artifact
from tests.support.broker import free_port

pytestmark = pytest.mark.kafka


def test_demo_runs_end_to_end_and_stops_everything_it_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_small_artifact(tmp_path / "artifacts")
    kafka_port, metrics_port = free_port(), free_port()
    options = ["--model", str(model), "--kafka-port", str(kafka_port), "--metrics-port", str(metrics_port)]
    options += ["--rate", "300", "--duration", "4", "--interval", "1", "--bad-rate", "0.05"]

    assert main(["demo", *options]) == 0

    out = capsys.readouterr().out
    assert f"metrics at http://127.0.0.1:{metrics_port}/metrics" in out
    live = [line for line in out.splitlines() if re.match(r"demo: \[ *\d+ s\]", line)]
    assert live and all("beats/s" in line and "p99 latency" in line for line in live)
    assert "worker consumed 1,2" in out  # 1,200 beats + the malformed records
    precision, recall = map(float, re.search(r"precision ([\d.]+), recall ([\d.]+)", out).groups())
    assert precision > 0.5 and recall > 0.5  # the tiny test model; the real one is ~0.97 / 0.99
    assert "dead letters by reason match the injected faults" in out
    assert "WARNING" not in out
    assert "nothing left running" in out
    assert not port_answers(kafka_port) and not port_answers(metrics_port)
    leftovers = subprocess.run(["pgrep", "-f", f"ecg-demo-kafka-{kafka_port}-"], capture_output=True)
    assert leftovers.returncode == 1, leftovers.stdout  # no broker process with the demo's data dir
    assert (model.parent / "demo" / "worker.log").is_file()
