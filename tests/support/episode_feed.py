"""Beats for episode tests against the broker: scripted per source, with beat times of their own.

Patterns are strings, one character a beat, one second of beat time each: ``N`` a normal beat,
``A`` an anomalous one, ``P`` an anomalous one with the highest score of the set, ``.`` a beat time
with no beat (the source is silent). Beats are sent in beat-time order across sources, so each
partition's beat-time clock moves as a live feed's would.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from kafka import KafkaProducer

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker.model import load_model
from tests.support.artifact import load_test_split
from tests.support.worker import read_topic

T0 = 1_750_000_000_000  # beat time of every pattern's first character (epoch ms)


@dataclass(frozen=True)
class BeatValues:
    """A normal, an anomalous and a peak beat (raw values), and what the model scores them."""

    normal: np.ndarray
    anomalous: np.ndarray
    peak: np.ndarray
    threshold: float
    anomalous_score: float
    peak_score: float

    @classmethod
    def of(cls, model_path: Path) -> BeatValues:
        """Test-split beats the model scores well below its threshold, above it, and highest."""
        model = load_model(model_path)
        values, _ = load_test_split()
        score = model.score(values.astype(np.float32)).score
        t = model.threshold
        normal = int(np.argmin(np.abs(score - 0.3 * t)))
        anomalous = int(np.argmin(np.abs(score - 2.0 * t)))
        peak = int(np.argmax(score))
        assert score[normal] < 0.5 * t and 1.5 * t < score[anomalous] < score[peak]
        return cls(
            values[normal],
            values[anomalous],
            values[peak],
            t,
            float(score[anomalous]),
            float(score[peak]),
        )

    def encoded(self, source: str, char: str, ms: int) -> bytes:
        value = {"N": self.normal, "A": self.anomalous, "P": self.peak}[char]
        return m.encode_beat_json(source, value, beat_time=ms)


def interleaved(patterns: dict[str, str], every_ms: int = 1000) -> list[tuple[str, int, str]]:
    """(source, beat time, character) of every beat, in beat-time order (ties: the dict's order)."""
    beats = [
        (T0 + i * every_ms, n, source, c)
        for n, (source, pattern) in enumerate(patterns.items())
        for i, c in enumerate(pattern)
        if c != "."
    ]
    return [(source, ms, c) for ms, _, source, c in sorted(beats)]


def random_patterns(seed: int, sources: int, length: int) -> dict[str, str]:
    """Runs of anomalous beats between normal ones, isolated false positives, a few silences."""
    rng = random.Random(seed)
    out = {}
    for s in range(sources):
        chars: list[str] = []
        while len(chars) < length:
            r = rng.random()
            if r < 0.06:
                chars += "A" * rng.randrange(3, 25) + ("P" if rng.random() < 0.3 else "")
            elif r < 0.07:
                chars += "." * rng.randrange(30, 90)
            else:
                chars += "A" if rng.random() < 0.04 else "N"
        out[f"patient-{s:02d}"] = "".join(chars[:length])
    return out


def send(
    bootstrap: str,
    topic: str,
    beats: list[tuple[str, int, str]],
    values: BeatValues,
    partition_of: dict[str, int] | None = None,
    rate: float | None = None,
) -> dict[tuple[str, int], tuple[int, int]]:
    """Send ``beats`` in order (key = source; ``partition_of`` places sources, else the key hash),
    at ``rate`` beats/s if given; returns (partition, offset) of each by (source, beat time)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    futures = []
    start = time.monotonic()
    for i, (source, ms, c) in enumerate(beats):
        if rate is not None and i % 20 == 19:
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        partition = None if partition_of is None else partition_of[source]
        future = producer.send(
            topic,
            key=source.encode(),
            value=values.encoded(source, c, ms),
            headers=m.beat_headers(),
            partition=partition,
        )
        futures.append(((source, ms), future))
    producer.flush(120)
    placed = {}
    for key, future in futures:
        meta = future.get(timeout=30)
        placed[key] = (meta.partition, meta.offset)
    producer.close()
    return placed


def alerts_by_source(bootstrap: str, topic: str, committed_only: bool = True) -> dict[str, list[dict]]:
    """Every alert record of ``topic``, per source in the order written (its partition's order)."""
    out: dict[str, list[dict]] = {}
    for record in read_topic(bootstrap, topic, committed_only=committed_only):
        alert = orjson.loads(record.value)
        assert record.key == alert["source_id"].encode()
        out.setdefault(alert["source_id"], []).append(alert)
    return out
