"""Shared pieces of the benchmark: topics, pre-filled feeds, drain timing, memory, histogram quantiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Producer
from kafka.admin import KafkaAdminClient, NewTopic

from ecg_anomaly.schemas import messages as m
from tests.support.broker import REPO
from tests.support.worker import WorkerProcess, env_without_worker_settings

PARTITIONS = 4  # the scale-out run needs more partitions than workers; every input topic has 4


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topics(admin: KafkaAdminClient, *names: str, partitions: int = PARTITIONS) -> None:
    admin.create_topics([NewTopic(n, partitions, 1) for n in names])


@dataclass(frozen=True)
class Feed:
    """A pre-filled input topic; every run drains it from the start with its own consumer group."""

    topic: str
    binary: bool
    beats: int
    sources: int


def fill(
    bootstrap: str, admin: KafkaAdminClient, beats: np.ndarray, count: int, binary: bool, sources: int
) -> Feed:
    """``count`` beats cycling through ``beats``, keyed by ``sources`` source ids, on a new topic."""
    topic = unique(f"bench-{'binary' if binary else 'json'}")
    create_topics(admin, topic)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    headers = m.beat_headers(m.BINARY_CONTENT_TYPE if binary else m.JSON_CONTENT_TYPE)
    encoded = [
        m.encode_beat_binary(b) if binary else m.encode_beat_json(f"source-{i % sources}", b, beat_id=f"b{i}")
        for i, b in enumerate(beats)
    ]
    failed: list[Any] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failed.append(error)

    keys = [f"source-{i}".encode() for i in range(sources)]
    for i in range(count):
        while True:
            try:
                value = encoded[i % len(encoded)]
                producer.produce(topic, value, keys[i % sources], headers=headers, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(300)
    if failed or left:  # a drain waiting for beats that never arrived would hang
        missing = len(failed) + left
        raise RuntimeError(f"filling {topic}: {missing} of {count} beats not written ({failed[:1]})")
    return Feed(topic, binary, count, sources)


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads) so far.

    Less sensitive to other load on the machine than wall-clock rates, so it is
    the figure to compare before/after changes on a busy, shared machine.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_seconds() -> float:
    """CPU time the hypervisor gave other guests while this machine's CPUs wanted it, so far (all CPUs)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def worker(
    bootstrap: str,
    model: Path,
    topic: str,
    logs: Path,
    group: str = "",
    python: str | None = None,
    **options: Any,
) -> WorkerProcess:
    """A worker of this checkout, or of another installed build (``python``: its interpreter)."""
    group = group or unique("bench-group")
    return WorkerProcess(bootstrap, model, topic, group, logs / f"{group}.log", python, **options)


def drain_rate(samples: list[tuple[float, float]], total: float) -> float:
    """Beats/s from (time, consumed) samples, timed from the first sample that saw any progress.

    Start-up (connecting, joining the group) is excluded; the first partial poll is too,
    which is why the count is taken from that sample rather than from zero.
    """
    started = next(s for s in samples if s[1] > 0)
    return (total - started[1]) / max(samples[-1][0] - started[0], 1e-9)


def run_module(module: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``python -m module args`` (a bench helper process) and parse the JSON it prints last."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_without_worker_settings(),
    )
    if result.returncode != 0:
        raise RuntimeError(f"{module} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float:
    """Prometheus' histogram_quantile (linear within the bucket), in ms."""
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), v)
        for k, v in metrics.items()
        if k.startswith(name + "_bucket")
    )
    total = buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= q * total:
            if bound == float("inf"):
                return round(lower_bound * 1000, 1)
            share = (q * total - lower_count) / max(count - lower_count, 1)
            return round((lower_bound + (bound - lower_bound) * share) * 1000, 1)
        lower_bound, lower_count = bound, count
    return float("nan")
