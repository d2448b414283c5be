"""Publishing beats to the input topic at a steady rate: the engine of ``ecg-anomaly replay`` and the demo.

Beats come from a labelled file (ECG5000 by default) and go out in the
contracts of ``schemas.messages``: the n-th beat sent belongs to simulated
source ``n mod sources`` (the record key, so each source's beats stay in
order on one partition) and its beat time is the moment it is sent, which is
also the record timestamp the worker measures end-to-end latency from.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kafka.errors import KafkaError

from ecg_anomaly.schemas.messages import (
    BINARY_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    beat_headers,
    encode_beat_binary,
    encode_beat_json,
)
from ecg_anomaly.tools.faults import BadRecord, FaultInjector

SPLITS = ("test", "train", "all")
ENCODINGS = ("json", "binary")


@dataclass(frozen=True)
class BeatSet:
    values: np.ndarray  # float32 [N, 140], raw
    labels: list[str] | None  # "normal" / "anomaly" per beat; None when the data has no labels
    ids: list[str]  # beat ids, e.g. "test-17" (the 18th beat of the test split)
    source: str  # where the beats came from, for messages


def load_beats(data: str, fmt: str, split: str, test_size: float, split_seed: int) -> BeatSet:
    """Beats of ``data`` (``ecg5000``, a path or a URL); ``split`` picks the trainer's test or train part.

    The split is :func:`trainer.data.split_train_test`, the one the trainer evaluates
    on, so replaying ``test`` replays exactly the beats the model never saw.
    """
    from ecg_anomaly.schemas.datasets import load_dataset, split_train_test

    dataset = load_dataset(data, fmt, labelled=False)
    if split != "all":
        train, test = split_train_test(dataset, test_size, split_seed)
        dataset = test if split == "test" else train
    labels = None
    if dataset.is_normal is not None:
        labels = ["normal" if normal else "anomaly" for normal in dataset.is_normal.tolist()]
    ids = [f"{split}-{i}" for i in range(len(dataset))]
    return BeatSet(dataset.beats, labels, ids, f"{dataset.source} ({split})")


@dataclass(frozen=True)
class ReplayPlan:
    topic: str
    encoding: str = "json"
    sources: int = 16
    rate: float | None = None  # beats/s; None = as fast as the producer goes
    limit: int | None = None  # beats; None = the whole set (once, or forever with loop)
    loop: bool = False
    with_labels: bool = True  # JSON only: the binary format has no room for a label


@dataclass
class ReplayStats:
    started: float = field(default_factory=time.monotonic)
    beats: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)  # expected dead-letter reason → records
    delivered: int = 0  # acknowledged by the broker
    failed: int = 0
    first_error: str | None = None
    finished: float | None = None

    @property
    def records(self) -> int:
        return self.beats + sum(self.bad.values())

    @property
    def unacknowledged(self) -> int:
        return self.records - self.delivered - self.failed

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


def source_id(n: int, sources: int) -> str:
    return f"patient-{n % sources:03d}"


class Replayer:
    """Sends a :class:`BeatSet` as planned; :meth:`stop` (from a signal handler or thread) ends it early."""

    def __init__(
        self, producer: Any, plan: ReplayPlan, beats: BeatSet, faults: FaultInjector | None = None
    ) -> None:
        if plan.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}")
        self.producer = producer
        self.plan = plan
        self.beats = beats
        self.faults = faults
        self.stats = ReplayStats()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        content_type = BINARY_CONTENT_TYPE if plan.encoding == "binary" else JSON_CONTENT_TYPE
        self._headers = beat_headers(content_type)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _order(self) -> Iterator[int]:
        rows = range(len(self.beats.values))
        order = itertools.cycle(rows) if self.plan.loop else iter(rows)
        return itertools.islice(order, self.plan.limit)

    def run(
        self,
        progress: Callable[[ReplayStats], None] | None = None,
        interval: float = 5.0,
        flush_timeout: float = 60.0,
    ) -> ReplayStats:
        """Send until the data (or ``limit``) ends or :meth:`stop`; then flush. Returns the stats."""
        stats = self.stats
        stats.started = time.monotonic()
        next_report = stats.started + interval
        for n, row in enumerate(self._order()):
            if self.plan.rate:
                wait = stats.started + n / self.plan.rate - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
            if self._stop.is_set():
                break
            self._send_beat(n, row)
            if progress is not None and time.monotonic() >= next_report:
                progress(stats)
                next_report += interval
        try:
            self.producer.flush(timeout=flush_timeout)
        except KafkaError as exc:  # what is still unacknowledged shows in stats.unacknowledged
            with self._lock:
                self.stats.first_error = self.stats.first_error or repr(exc)
        stats.finished = time.monotonic()
        return stats

    def _send_beat(self, n: int, row: int) -> None:
        source = source_id(n, self.plan.sources)
        values = self.beats.values[row]
        now_ms = int(time.time() * 1000)
        label = self.beats.labels[row] if self.beats.labels is not None else None
        if self.plan.encoding == "binary":
            value = encode_beat_binary(values)
        else:
            sent_label = label if self.plan.with_labels else None
            value = encode_beat_json(source, values, now_ms, self.beats.ids[row], sent_label)
        self._send(source.encode(), value, self._headers, now_ms)
        self.stats.beats += 1
        if label is not None:
            self.stats.labels[label] += 1
        if self.faults is not None:
            bad = self.faults.after_beat(source, values)
            if bad is not None:
                self._send_bad(bad, now_ms)

    def _send_bad(self, bad: BadRecord, now_ms: int) -> None:
        self._send(bad.key, bad.value, bad.headers, now_ms)
        self.stats.bad[bad.reason.value] += 1

    def _send(self, key: bytes | None, value: bytes | None, headers: list, timestamp_ms: int) -> None:
        try:
            future = self.producer.send(
                self.plan.topic, key=key, value=value, headers=headers, timestamp_ms=timestamp_ms
            )
        except KafkaError as exc:  # buffer full past max_block_ms, record too large, ...
            self._failed(exc)
            return
        future.add_callback(self._delivered)
        future.add_errback(self._failed)

    def _delivered(self, _metadata: Any) -> None:
        with self._lock:
            self.stats.delivered += 1

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.stats.failed += 1
            if self.stats.first_error is None:
                self.stats.first_error = repr(exc)
