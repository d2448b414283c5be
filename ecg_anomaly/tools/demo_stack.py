"""What the demo starts and must stop again: the model (trained once), the local broker, the worker.

Every ``start_*`` function registers its own cleanup on the caller's
:class:`~contextlib.ExitStack` before it starts anything, so an interrupted
start-up is cleaned up too. Children run in their own sessions: a Ctrl-C in
the terminal reaches only the demo, which then stops them in order (the
worker drains on SIGTERM, the broker is stopped by ``kafka.sh down``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.base.kafka import ErrorLog, KafkaConnection, check_cluster, explain, quiet_config

REPO = Path(__file__).resolve().parents[2]  # the checkout: the demo runs from one (make demo)
KAFKA_SCRIPT = REPO / "deploy" / "local" / "kafka.sh"
WORKER_STOP_TIMEOUT = 30.0  # the worker's own drain timeout is 15 s
GROUP_SETUP_TIMEOUT = 60.0
ADMIN_CLIENT_ID = "ecg-demo-admin"

Say = Callable[[str], None]


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_model(model: Path, preset: str, say: Say) -> None:
    """Reuse ``model`` if it exists; otherwise train it with ``ecg-anomaly train`` (TensorFlow, minutes).

    The training writes its report beside the model, as a plain ``train`` does: the docs send a demo
    user to it (and ``make report-screenshot`` renders it).
    """
    if model.is_file():
        say(f"model: reusing {model} (delete it to train a new one)")
        return
    say(f"model: {model} not found; training preset {preset!r} (a few minutes on 2 cores, once)")
    command = [sys.executable, "-m", "ecg_anomaly.cli", "train", "--preset", preset]
    command += ["--out-dir", str(model.parent), "--quiet"]
    if subprocess.run(command).returncode != 0 or not model.is_file():
        raise EcgAnomalyError(f"training did not produce {model}")


def start_broker(stack: ExitStack, port: int, say: Say) -> str:
    """A broker on 127.0.0.1:``port``: the one already answering there (left alone), or a fresh one.

    A fresh broker gets a throw-away data directory, so every demo starts from
    empty topics; it is stopped and its directory removed on exit.
    """
    bootstrap = f"127.0.0.1:{port}"
    if port_answers(port):
        say(f"broker: using the one already answering on {bootstrap} (it stays running)")
        return bootstrap
    data_dir = Path(tempfile.mkdtemp(prefix=f"ecg-demo-kafka-{port}-"))
    env = dict(os.environ, KAFKA_PORT=str(port), KAFKA_DATA_DIR=str(data_dir))
    env.setdefault("KAFKA_CONTROLLER_PORT", str(free_port()))

    def stop() -> None:
        say("stopping the broker")
        subprocess.run([str(KAFKA_SCRIPT), "down"], env=env, start_new_session=True, check=False)
        shutil.rmtree(data_dir, ignore_errors=True)

    stack.callback(stop)
    say(f"broker: starting Apache Kafka on {bootstrap} (deploy/local/kafka.sh; first run fetches the jars)")
    up = subprocess.run([str(KAFKA_SCRIPT), "up"], env=env, start_new_session=True, check=False)
    if up.returncode != 0:
        raise EcgAnomalyError("deploy/local/kafka.sh up failed (see its messages above)")
    return bootstrap


def create_topics(
    connection: KafkaConnection, partitions: dict[str, int], group: str, input_topic: str, say: Say
) -> None:
    """Create the missing topics, and start ``group`` at the input's end so only this run's beats count.

    A cluster that does not answer within ``--connect-timeout`` is one line. Right after a topic is
    created its partitions have no leader for a moment, and a fresh broker creates its offsets topic
    on the first group request: the group's offsets are set again until that settles.
    """
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

    existing = check_cluster(connection, ADMIN_CLIENT_ID, tuple(partitions))
    admin = AdminClient(quiet_config(connection, ADMIN_CLIENT_ID, ErrorLog()))
    missing = [NewTopic(t, n, 1) for t, n in partitions.items() if t not in existing]
    if missing:
        try:
            for future in admin.create_topics(missing).values():
                future.result()
        except KafkaException as exc:
            raise EcgAnomalyError(f"cannot create the demo's topics: {explain([exc.args[0]])}") from None
    say("topics: " + ", ".join(f"{t} ({n} partition{'s' * (n != 1)})" for t, n in partitions.items()))
    count = existing.get(input_topic, partitions[input_topic])
    deadline = time.monotonic() + GROUP_SETUP_TIMEOUT
    while True:
        try:
            latest = {TopicPartition(input_topic, p): OffsetSpec.latest() for p in range(count)}
            ends = [
                TopicPartition(input_topic, tp.partition, future.result().offset)
                for tp, future in admin.list_offsets(latest).items()
            ]
            for future in admin.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, ends)]
            ).values():
                future.result()
            return
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise EcgAnomalyError(
                    f"cannot set up consumer group {group}: {explain([exc.args[0]])}"
                ) from None
            time.sleep(0.5)


class DemoWorker:
    """``ecg-anomaly worker`` as a child process, logging to a file, metrics on 127.0.0.1."""

    def __init__(self, stack: ExitStack, args: list[str], port: int, log_path: Path, say: Say) -> None:
        self.port = port
        self.log_path = log_path
        self.say = say
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "ecg_anomaly.cli", "worker", *args]
        command += ["--http-host", "127.0.0.1", "--http-port", str(port)]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        stack.callback(self.stop)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def wait_ready(self, timeout: float, interrupted: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not interrupted():
            if self.proc.poll() is not None:
                raise EcgAnomalyError(f"the worker exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        if not interrupted():
            raise EcgAnomalyError(f"the worker was not ready after {timeout:.0f} s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.say("stopping the worker (SIGTERM: finish the batch, flush, commit)")
            self.proc.terminate()
            try:
                self.proc.wait(WORKER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.say(f"the worker did not stop in {WORKER_STOP_TIMEOUT:.0f} s; killing it")
                self.proc.kill()
                self.proc.wait()
        self.say(f"worker exited with {self.proc.returncode}; its log: {self.log_path}")

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
