"""Run ``ecg-anomaly`` as a user does: a subprocess with its own environment; its output and duration.

A subprocess, not ``main()`` in the test's process: librdkafka writes its own log lines straight to
file descriptor 2, which only a separate process's stderr shows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

from tests.support.broker import REPO
from tests.support.worker import env_without_worker_settings

# What Kubernetes injects into every pod of a namespace that has a Service named kafka.
KUBERNETES_SERVICE_LINKS = {
    "KAFKA_PORT": "tcp://10.0.0.7:9092",
    "KAFKA_PORT_9092_TCP": "tcp://10.0.0.7:9092",
    "KAFKA_SERVICE_HOST": "10.0.0.7",
    "KAFKA_SERVICE_PORT": "9092",
}


@dataclass(frozen=True)
class CliRun:
    returncode: int
    out: str
    err: str
    seconds: float

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> CliRun:
    """``python -m ecg_anomaly ARGS`` with the test's environment minus ``ECG_*``, plus ``env``."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ecg_anomaly", *args],
        cwd=REPO,
        env={**env_without_worker_settings(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliRun(result.returncode, result.stdout, result.stderr, time.monotonic() - started)
