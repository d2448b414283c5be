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
from typing import TYPE_CHECKING, Any

import numpy as np

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.base.kafka import ErrorLog, KafkaConnection, check_cluster, explain, quiet_config
from ecg_anomaly.schemas.messages import (
    BINARY_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    beat_headers,
    encode_beat_binary,
    encode_beat_json,
)
from ecg_anomaly.tools.faults import FaultInjector

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

SPLITS = ("test", "train", "all")
ENCODINGS = ("json", "binary")
# acks=all: "acknowledged" means written to every in-sync replica. Keys are partitioned with murmur2,
# as the Java client and kafka-python do (librdkafka's default, CRC32, would move every source).
PRODUCER_SETTINGS: dict[str, Any] = {
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 256 * 1024,
    "partitioner": "murmur2_random",
}


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
    """Sends a :class:`BeatSet` as planned through its own producer; :meth:`stop` ends it early.

    librdkafka acknowledges records from inside ``poll`` and ``flush`` on the calling thread, so
    :meth:`run` polls after every send. When the producer reports every broker down, the cluster is
    asked again (:func:`~ecg_anomaly.base.kafka.check_cluster`, up to ``--connect-timeout``); if it
    does not answer the run ends, and :attr:`lost` says why in one line.
    """

    def __init__(
        self,
        connection: KafkaConnection,
        plan: ReplayPlan,
        beats: BeatSet,
        faults: FaultInjector | None = None,
        client_id: str = "ecg-replay",
    ) -> None:
        from confluent_kafka import Producer

        if plan.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}")
        self.connection = connection
        self.client_id = client_id
        self.errors = ErrorLog()
        self.producer = Producer({**quiet_config(connection, client_id, self.errors), **PRODUCER_SETTINGS})
        self.plan = plan
        self.beats = beats
        self.faults = faults
        self.stats = ReplayStats()
        self.lost: str | None = None  # why the run ended early, when the cluster stopped answering
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._lock = threading.Lock()
        content_type = BINARY_CONTENT_TYPE if plan.encoding == "binary" else JSON_CONTENT_TYPE
        self._headers = beat_headers(content_type)

    def stop(self) -> None:
        """Send nothing more; wait for what was sent to be acknowledged."""
        self._stop.set()

    def abandon(self) -> None:
        """Send nothing more and do not wait for acknowledgements."""
        self._abandon.set()
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
        """Send until the data (or ``limit``) ends, :meth:`stop` or the cluster is lost; then flush."""
        stats = self.stats
        stats.started = time.monotonic()
        next_report = stats.started + interval
        for n, row in enumerate(self._order()):
            if self.plan.rate:
                wait = stats.started + n / self.plan.rate - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
            if self._stop.is_set() or not self._send_beat(n, row):
                break
            self.producer.poll(0)
            if self.errors.brokers_down.is_set() and not self._cluster_answers():
                break
            if progress is not None and time.monotonic() >= next_report:
                progress(stats)
                next_report += interval
        deadline = time.monotonic() + flush_timeout
        while not self._abandon.is_set() and self.producer.flush(0.2) and time.monotonic() < deadline:
            pass  # what is still unacknowledged at the deadline shows in stats.unacknowledged
        stats.finished = time.monotonic()
        return stats

    def _cluster_answers(self) -> bool:
        self.errors.brokers_down.clear()
        try:
            check_cluster(self.connection, self.client_id)
        except EcgAnomalyError as exc:
            self.lost = f"lost the Kafka cluster mid-run: {exc}"
            self.abandon()
            return False
        return True

    def _send_beat(self, n: int, row: int) -> bool:
        source = source_id(n, self.plan.sources)
        values = self.beats.values[row]
        now_ms = int(time.time() * 1000)
        label = self.beats.labels[row] if self.beats.labels is not None else None
        if self.plan.encoding == "binary":
            value = encode_beat_binary(values)
        else:
            sent_label = label if self.plan.with_labels else None
            value = encode_beat_json(source, values, now_ms, self.beats.ids[row], sent_label)
        if not self._send(source.encode(), value, self._headers, now_ms):
            return False
        self.stats.beats += 1
        if label is not None:
            self.stats.labels[label] += 1
        if self.faults is not None:
            bad = self.faults.after_beat(source, values)
            if bad is not None and self._send(bad.key, bad.value, bad.headers, now_ms):
                self.stats.bad[bad.reason.value] += 1
        return True

    def _send(self, key: bytes | None, value: bytes | None, headers: list, timestamp_ms: int) -> bool:
        """Hand one record to the producer; False if stopped while its queue was full (not sent)."""
        from confluent_kafka import KafkaException

        while True:
            try:
                self.producer.produce(
                    self.plan.topic,
                    value=value,
                    key=key,
                    headers=headers,
                    timestamp=timestamp_ms,
                    on_delivery=self._on_delivery,
                )
                return True
            except BufferError:  # librdkafka's queue is full: take acknowledgements, then try again
                if self._stop.is_set():
                    return False
                self.producer.poll(0.05)
            except KafkaException as exc:  # refused before sending: too large, ...
                self._failed(exc.args[0])
                return True

    def _on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            self._failed(error)
            return
        with self._lock:
            self.stats.delivered += 1

    def _failed(self, error: KafkaError) -> None:
        with self._lock:
            self.stats.failed += 1
            if self.stats.first_error is None:
                self.stats.first_error = explain([error])
