"""Obtain a real Kafka broker for tests, benchmarks and fault injection.

Order: ``KAFKA_BOOTSTRAP_SERVERS`` if set; testcontainers' Kafka module if a
Docker engine answers; otherwise ``deploy/local/kafka.sh`` on a free port with
a throw-away data directory (so concurrent test sessions never share state).
There is no fake broker: if none can be had, the caller gets an exception.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "local" / "kafka.sh"


class BrokerUnavailable(RuntimeError):
    """No real broker could be obtained."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class LocalBroker(AbstractContextManager["LocalBroker"]):
    """The project's local KRaft broker, on its own ports and data directory.

    Fault-injection tests use ``kill``, ``pause``/``resume`` and ``start`` on it. ``secure``: the
    script's secured broker (``up --secure``): its PLAINTEXT port (``bootstrap``) is the admin's, the
    clients' are ``sasl_ssl_bootstrap`` and ``ssl_bootstrap``; CA, passwords and keys in ``secrets``.
    """

    def __init__(self, port: int | None = None, data_dir: Path | None = None, secure: bool = False) -> None:
        self.port = port or free_port()
        self.controller_port = free_port()  # fixed: a restart after kill() must find the same quorum
        self.secure = secure
        self.sasl_ssl_port, self.ssl_port = (free_port(), free_port()) if secure else (0, 0)
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix=f"ecg-kafka-{self.port}-"))
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.sasl_ssl_bootstrap = f"127.0.0.1:{self.sasl_ssl_port}"
        self.ssl_bootstrap = f"127.0.0.1:{self.ssl_port}"
        self.secrets = self.data_dir / "secure"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(self.controller_port),
            KAFKA_DATA_DIR=str(self.data_dir),
            KAFKA_SOURCE=env.get("KAFKA_SOURCE", "auto"),
        )
        if self.secure:
            env.update(KAFKA_SASL_SSL_PORT=str(self.sasl_ssl_port), KAFKA_SSL_PORT=str(self.ssl_port))
        return env

    def _script(self, *command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *command], env=self._env(), capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> None:
        result = self._script("up", *(["--secure"] if self.secure else []))
        if result.returncode != 0:
            raise BrokerUnavailable(f"deploy/local/kafka.sh up failed:\n{result.stderr[-4000:]}")

    def stop(self) -> None:
        self._script("down", timeout=60)

    def pid(self) -> int:
        return int((self.data_dir / "broker.pid").read_text().strip())

    def kill(self) -> None:
        os.kill(self.pid(), signal.SIGKILL)

    def pause(self) -> None:
        os.kill(self.pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
