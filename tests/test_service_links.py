"""Kubernetes service links (``KAFKA_PORT=tcp://10.0.0.7:9092`` for a Service named kafka) break nothing.

Nothing reads the environment while a parser is built; the demo takes its broker port only as a flag,
which ``make demo`` fills from ``KAFKA_PORT``. Real runs of the tools beside these variables are in
``test_tool_connection.py``.
"""

from __future__ import annotations

import subprocess

import pytest

from ecg_anomaly.cli import COMMANDS
from tests.support.broker import REPO, SCRIPT
from tests.support.cli import KUBERNETES_SERVICE_LINKS, run_cli
from tests.support.worker import env_without_worker_settings


@pytest.mark.parametrize("command", [name for name, _module, _help in COMMANDS])
def test_every_command_help_works_beside_kubernetes_service_links(command: str) -> None:
    run = run_cli(command, "--help", env=KUBERNETES_SERVICE_LINKS)
    assert run.returncode == 0, run.err
    assert run.out.startswith(f"usage: ecg-anomaly {command}") and run.err == ""


def test_make_demo_passes_kafka_port_as_a_flag() -> None:
    env = {**env_without_worker_settings(), "KAFKA_PORT": "19092"}
    dry = subprocess.run(
        ["make", "-n", "demo"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert "ecg-anomaly demo --kafka-port 19092" in dry.stdout


def test_kafka_sh_refuses_a_service_link_in_kafka_port_with_one_line() -> None:
    env = {**env_without_worker_settings(), **KUBERNETES_SERVICE_LINKS}
    result = subprocess.run([str(SCRIPT), "status"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "[kafka.sh] error: KAFKA_PORT must be a port number, not 'tcp://10.0.0.7:9092'"
    ]
