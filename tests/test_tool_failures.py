"""The tools' mistakes read like the worker's: one line naming the cause, within --connect-timeout."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import free_port
from tests.support.cli import run_cli

CONNECT_TIMEOUT = 3.0
# The command's own start (imports; replay loads ECG5000 first) on a busy 2-core machine, on top.
START_UP = 8.0


@pytest.mark.parametrize("command", [["replay", "--limit", "5"], ["watch"], ["redrive"]])
def test_an_unreachable_broker_is_one_line_within_the_connect_timeout(command: list[str]) -> None:
    port = free_port()  # nothing listens there
    run = run_cli(
        *command, "--bootstrap-servers", f"127.0.0.1:{port}", "--connect-timeout", f"{CONNECT_TIMEOUT:g}"
    )
    assert run.returncode == 1
    assert run.err_lines == [
        f"ecg-anomaly {command[0]}: error: cannot reach Kafka at 127.0.0.1:{port} (PLAINTEXT) within 3 s: "
        "no broker answers at that address (or it speaks another protocol: check --security-protocol) "
        "(Failed to get metadata: Local: Broker transport failure)"
    ]
    assert run.seconds < CONNECT_TIMEOUT + START_UP


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port where connections are accepted and nothing ever answers (not a Kafka broker)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def test_demo_with_another_program_on_the_broker_port_is_one_line(silent_port: int, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")  # reused as it is: the demo stops at the broker, before any worker
    run = run_cli(
        "demo",
        "--model",
        str(model),
        "--kafka-port",
        str(silent_port),
        "--metrics-port",
        str(free_port()),
        "--connect-timeout",
        f"{CONNECT_TIMEOUT:g}",
    )
    assert run.returncode == 1
    assert len(run.err_lines) == 1, run.err
    assert run.err.startswith(
        f"ecg-anomaly demo: error: cannot reach Kafka at 127.0.0.1:{silent_port} (PLAINTEXT) within 3 s: "
    )
    assert run.err.rstrip().endswith(
        "if another program holds the port, choose another: KAFKA_PORT=19092 make demo"
    )
    assert "broker: using the one already answering" in run.out and "worker" not in run.out
    assert run.seconds < CONNECT_TIMEOUT + START_UP


@pytest.mark.kafka
@pytest.mark.parametrize("command", ["watch", "redrive"])
def test_a_missing_topic_is_one_line(command: str, kafka_bootstrap: str) -> None:
    topic = f"missing-{uuid.uuid4().hex[:10]}"
    option = "--topic" if command == "watch" else "--dlq"
    run = run_cli(command, "--bootstrap-servers", kafka_bootstrap, option, topic, "--connect-timeout", "10")
    assert run.returncode == 1
    assert run.err_lines == [
        f"ecg-anomaly {command}: error: topic {topic} does not exist at {kafka_bootstrap} (PLAINTEXT)"
    ]
