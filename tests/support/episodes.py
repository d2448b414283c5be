"""Episode streams for tests without a broker: scripted beats → batches → the store, and the changelog."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import orjson

from ecg_anomaly.worker.decode import DecodedBatch
from ecg_anomaly.worker.episodes.rules import EpisodeRules
from ecg_anomaly.worker.episodes.store import EpisodeStep, EpisodeStore
from ecg_anomaly.worker.records import Record, Records

TOPIC = "in"
THRESHOLD = 1.0


@dataclass(frozen=True)
class Beat:
    partition: int
    offset: int
    source: str
    ms: int
    score: float  # anomalous when above THRESHOLD

    @property
    def anomalous(self) -> bool:
        return self.score > THRESHOLD


def script(
    source: str, pattern: str, start_ms: int = 0, every_ms: int = 1000
) -> list[tuple[str, int, float]]:
    """``"NNAAN..."`` → (source, beat time, score) per beat; ``A`` anomalous, ``N`` normal, ``.`` a
    missed beat (time passes, nothing sent). Scores differ beat by beat, so the peak is a definite beat."""
    out = []
    for i, c in enumerate(pattern):
        if c == ".":
            continue
        score = 1.5 + (i % 7) / 10 if c == "A" else 0.2 + (i % 5) / 10
        out.append((source, start_ms + i * every_ms, score))
    return out


def place(beats: list[tuple[str, int, float]], partitions: int = 1) -> list[Beat]:
    """Give the beats (in this order) partitions by source and consecutive offsets per partition."""
    next_offset = [0] * partitions
    out = []
    for source, ms, score in beats:
        p = sum(source.encode()) % partitions
        out.append(Beat(p, next_offset[p], source, ms, score))
        next_offset[p] += 1
    return out


def interleave(*streams: list[tuple[str, int, float]]) -> list[tuple[str, int, float]]:
    """Several sources' beats merged by beat time (ties in the order given)."""
    tagged = [(ms, i, j, b) for i, s in enumerate(streams) for j, b in enumerate(s) for ms in (b[1],)]
    return [b for *_, b in sorted(tagged)]


def batch(beats: list[Beat]) -> tuple[DecodedBatch, np.ndarray, np.ndarray, dict[tuple[str, int], int]]:
    """A decoded batch of ``beats``, their flags and scores, and the offsets after it per partition."""
    records = Records.of(
        [Record(TOPIC, b.partition, b.offset, b.ms, b.source.encode(), b"", None) for b in beats]
    )
    n = len(beats)
    decoded = DecodedBatch(
        records,
        np.zeros((n, 1), dtype=np.float32),
        list(range(n)),
        [b.source for b in beats],
        [b.ms for b in beats],
        [None] * n,
        [None] * n,
    )
    score = np.array([b.score for b in beats], dtype=np.float32)
    after: dict[tuple[str, int], int] = {}
    for b in beats:
        after[(TOPIC, b.partition)] = b.offset + 1
    return decoded, score > np.float32(THRESHOLD), score, after


def run(store: EpisodeStore, beats: list[Beat], cuts: list[int] | None = None) -> list[EpisodeStep]:
    """Step ``store`` through ``beats`` cut into batches before the indices in ``cuts``."""
    bounds = [0, *(cuts or []), len(beats)]
    steps = []
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            decoded, flags, score, after = batch(beats[lo:hi])
            steps.append(store.step(decoded, flags, score, THRESHOLD, after, "v1"))
    return steps


def alerts(steps: list[EpisodeStep]) -> list[dict]:
    return [orjson.loads(r.value) for s in steps for r in s.alerts]


def store(k: int = 3, n: int = 5, m: int = 3, silence_s: float = 10, update_s: float = 0) -> EpisodeStore:
    return EpisodeStore(EpisodeRules(k, n, m, round(silence_s * 1000), round(update_s * 1000)), "alerts")
