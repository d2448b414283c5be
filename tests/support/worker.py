"""Run the worker as a real subprocess in tests and benchmarks, and read what it wrote to Kafka."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from ecg_anomaly.schemas import messages as m
from tests.support.broker import REPO, free_port


class WorkerProcess:
    """``ecg-anomaly worker`` in a subprocess with its own HTTP port; log lines go to ``log_path``."""

    def __init__(
        self,
        bootstrap: str,
        model: Path,
        topic: str,
        group: str,
        log_path: Path,
        python: str | None = None,
        env: dict[str, str] | None = None,
        **options: Any,
    ):
        """``python``: the interpreter of another installed build (a benchmark's baseline), run outside
        the checkout so that it imports its own code. ``env``: variables added to its environment."""
        self.env = {**env_without_worker_settings(), **(env or {})}
        self.port = free_port()
        self.log_path = log_path
        self.cwd = REPO if python is None else Path("/")
        self.args = [
            python or sys.executable,
            "-m",
            "ecg_anomaly.cli",
            "worker",
            "--model",
            str(model),
            "--bootstrap-servers",
            bootstrap,
            "--input-topic",
            topic,
            "--group-id",
            group,
            "--http-port",
            str(self.port),
            "--http-host",
            "127.0.0.1",
        ]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            self.args += [flag] if value is True else [flag, str(value)]  # True: a switch (--episodes)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        log.close()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.url(path), timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds until /readyz answered 200; fails if the process exits first."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode} before ready:\n{self.log()}")
            if self.status("/readyz") == 200:
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"worker not ready after {timeout} s:\n{self.log()}")

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as ``name{label="v",...}`` → value (labels sorted)."""
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


def produce_beats(
    bootstrap: str,
    topic: str,
    beats: np.ndarray,
    binary: bool = False,
    labels: Sequence[int] | None = None,
    sources: int = 7,
    rate: float | None = None,
) -> None:
    """Publish beats (key = source id), optionally at ``rate`` beats/s."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)
    headers = m.beat_headers(m.BINARY_CONTENT_TYPE if binary else m.JSON_CONTENT_TYPE)
    start = time.monotonic()
    for i, beat in enumerate(beats):
        source = f"source-{i % sources}"
        if binary:
            value = m.encode_beat_binary(beat)
        else:
            label = None if labels is None else ("anomaly" if labels[i] else "normal")
            value = m.encode_beat_json(source, beat, beat_id=f"b{i}", label=label)
        producer.send(topic, key=source.encode(), value=value, headers=headers)
        if rate is not None and i % 20 == 19:
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(60)
    producer.close()


def produce_raw(
    bootstrap: str,
    topic: str,
    records: Iterable[
        tuple[bytes | None, bytes | None, list] | tuple[bytes | None, bytes | None, list, int | None]
    ],
    max_request_size: int = 1024 * 1024,
) -> None:
    """Send ``(key, value, headers[, timestamp_ms])`` records in order; each must be acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=max_request_size)
    futures = []
    for key, value, headers, *stamp in records:
        timestamp = stamp[0] if stamp else None
        futures.append(producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=timestamp))
    producer.flush(60)
    for future in futures:
        future.get(timeout=10)
    producer.close()


def read_topic(
    bootstrap: str, topic: str, committed_only: bool = False, idle: float = 3.0, **client: Any
) -> list[Any]:
    """Every record of ``topic`` (all partitions, from the start) until it is idle for ``idle`` s.

    ``client``: more kafka-python settings (security); ``bootstrap`` may then be empty."""
    consumer = KafkaConsumer(
        **({"bootstrap_servers": bootstrap} | client),
        enable_auto_commit=False,
        isolation_level="read_committed" if committed_only else "read_uncommitted",
        fetch_max_wait_ms=100,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[Any] = []
        last = time.monotonic()
        while time.monotonic() - last < idle:
            batch = consumer.poll(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
                last = time.monotonic()
            if all(consumer.position(tp) >= end[tp] for tp in partitions):
                break
        return records
    finally:
        consumer.close(timeout_ms=5000)


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition()`` until true (a readiness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def env_without_worker_settings() -> dict[str, str]:
    """The test's environment minus ``ECG_*`` (a developer's settings must not leak into tests)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ECG_")}
