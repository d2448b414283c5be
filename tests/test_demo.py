"""``ecg-anomaly demo`` end to end as ``make demo`` runs it: own broker, worker, feed, then nothing left."""

from __future__ import annotations

import contextlib
import itertools
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from ecg_anomaly.cli import main
from ecg_anomaly.tools.demo_stack import port_answers
from tests.support.artifact import build_small_artifact
from tests.support.broker import REPO, LocalBroker, free_port
from tests.support.worker import env_without_worker_settings

pytestmark = pytest.mark.kafka


def test_demo_runs_end_to_end_and_stops_everything_it_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_small_artifact(tmp_path / "artifacts")
    kafka_port, metrics_port, web_port = free_port(), free_port(), free_port()
    options = ["--model", str(model), "--kafka-port", str(kafka_port), "--metrics-port", str(metrics_port)]
    options += ["--web-port", str(web_port)]
    options += ["--rate", "300", "--duration", "4", "--interval", "1", "--bad-rate", "0.05"]
    page = _PageVisitor(f"http://127.0.0.1:{web_port}/api/beats")
    page.start()

    assert main(["demo", *options]) == 0

    page.done.set()
    page.join()
    assert page.rescored, "the demo's page never showed a flagged beat with its per-sample error"
    assert page.episodes, "the demo's page does not show the open alert episodes"
    out = capsys.readouterr().out
    assert f"metrics at http://127.0.0.1:{metrics_port}/metrics" in out
    assert f"live page: http://127.0.0.1:{web_port}/ " in out
    live = [line for line in out.splitlines() if re.match(r"demo: \[ *\d+ s\]", line)]
    assert live and all("beats/s" in line and "p99 latency" in line for line in live)
    assert all(re.search(r"\| episodes open \d+ \(opened \d+, closed \d+", line) for line in live)
    # the worker ran with --episodes on the topic the demo made: the shuffled test split opens some
    opened = re.search(r"alert episodes open \d+ \(opened (\d+), closed \d+.*; (\d+) alert records", out)
    assert opened and int(opened[1]) > 0 and int(opened[2]) >= int(opened[1]), out
    assert "worker consumed 1,2" in out  # 1,200 beats + the malformed records
    precision, recall = map(float, re.search(r"precision ([\d.]+), recall ([\d.]+)", out).groups())
    assert precision > 0.5 and recall > 0.5  # the tiny test model; the real one is ~0.97 / 0.99
    assert "dead letters by reason match the injected faults" in out
    assert "WARNING" not in out
    assert "nothing left running" in out
    assert not any(port_answers(port) for port in (kafka_port, metrics_port, web_port))
    leftovers = subprocess.run(["pgrep", "-f", f"ecg-demo-kafka-{kafka_port}-"], capture_output=True)
    assert leftovers.returncode == 1, leftovers.stdout  # no broker process with the demo's data dir
    assert (model.parent / "demo" / "worker.log").is_file()


class _PageVisitor(threading.Thread):
    """Asks the demo's live page for its flagged beats while the demo runs; keeps the first rescored one."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.done = threading.Event()
        self.rescored: dict | None = None
        self.episodes = False

    def run(self) -> None:
        while self.rescored is None and not self.done.wait(0.3):
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    beats = orjson.loads(response.read())["beats"]
            except OSError:
                continue  # not serving yet
            self.rescored = next((b for b in beats if b["sample_error"] is not None), None)
        if self.rescored is not None:  # the page shows the worker's open episodes (a tile)
            stats_url = self.url.replace("/api/beats", "/api/stats")
            with contextlib.suppress(OSError), urllib.request.urlopen(stats_url, timeout=10) as response:
                stats = orjson.loads(response.read())
                self.episodes = stats["episodes"] and "episodes_open" in stats["metrics"]["numbers"]


def test_demo_ends_with_one_line_when_its_broker_vanishes(tmp_path: Path) -> None:
    """A broker the demo did not start (so it leaves it alone) is killed while the feed runs."""
    model = build_small_artifact(tmp_path / "artifacts")
    metrics_port = free_port()
    with LocalBroker() as broker:
        command = [sys.executable, "-m", "ecg_anomaly", "demo", "--model", str(model)]
        command += ["--kafka-port", str(broker.port), "--metrics-port", str(metrics_port)]
        command += ["--rate", "200", "--duration", "300", "--interval", "1", "--connect-timeout", "3"]
        demo = subprocess.Popen(
            command,
            cwd=REPO,
            env=env_without_worker_settings(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert demo.stdout is not None
        out = [
            line.decode() for line in itertools.takewhile(lambda line: b"demo: [" not in line, demo.stdout)
        ]
        assert demo.poll() is None, "".join(out)  # the feed runs and the worker scores it
        broker.kill()
        killed = time.monotonic()
        rest, err = demo.communicate(timeout=120)
        ended = time.monotonic() - killed
    assert demo.returncode == 1
    assert err.decode().splitlines() == [
        f"ecg-anomaly demo: error: lost the Kafka cluster mid-run: cannot reach Kafka at {broker.bootstrap} "
        "(PLAINTEXT) within 3 s: no broker answers at that address (or it speaks another protocol: check "
        "--security-protocol) (Failed to get metadata: Local: Broker transport failure)"
    ]
    assert "stopping the worker" in rest.decode()
    assert not port_answers(metrics_port)  # the worker it started is gone
    assert ended < 60, ended


def test_a_model_the_demo_trains_comes_with_its_report(tmp_path: Path) -> None:
    """``make report-screenshot`` after ``make demo`` needs the report the demo's training writes."""
    from ecg_anomaly.tools.demo_stack import ensure_model

    said: list[str] = []
    model = tmp_path / "artifacts" / "model.onnx"
    ensure_model(model, "tiny", said.append)
    assert model.is_file()
    assert (model.parent / "report.html").is_file(), said
