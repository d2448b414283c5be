"""Episodes in the delivery strategies, without a broker: what is written when, and what is committed.

At-least-once: a batch's changelog values are written only once its outputs (alert records among
them) were acknowledged, and its offsets committed only once those values were. Exactly-once: the
alert records, the changelog values and the offsets are in the batch's transaction.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker.clients import FatalError
from ecg_anomaly.worker.decode import BeatDecoder
from ecg_anomaly.worker.delivery import AtLeastOnce, ExactlyOnce
from ecg_anomaly.worker.episodes.changelog import ChangelogWriter
from ecg_anomaly.worker.episodes.partitions import EpisodePartitions
from ecg_anomaly.worker.episodes.rules import EpisodeRules
from ecg_anomaly.worker.episodes.state import CLOCK_KEY
from ecg_anomaly.worker.episodes.store import EpisodeStore
from ecg_anomaly.worker.metrics import WorkerMetrics
from ecg_anomaly.worker.model import load_model
from ecg_anomaly.worker.outputs import OutputBuilder
from ecg_anomaly.worker.pipeline import ScoredBatch, ScoringPipeline
from ecg_anomaly.worker.records import Record, Records
from ecg_anomaly.worker.settings import configure, load_settings
from ecg_anomaly.worker.topic_limits import OutputLimits
from ecg_anomaly.worker.watchdog import Watchdog
from tests.support.artifact import load_test_split
from tests.support.fake_clients import Consumer, Transactions

LOG = "log"


class _Producer(Transactions):
    """Keeps each produced record until the test has the broker answer it (``deliver``); as
    librdkafka, it reports the answers to the delivery callbacks only inside ``poll`` and ``flush``."""

    def __init__(self, fail_commit: KafkaError | None = None) -> None:
        self.pending: list[tuple[Any, str, bytes | None, int]] = []
        self.answered: list[tuple[Any, Any]] = []
        self.calls: list[str] = []
        self.fail_commit = fail_commit

    def produced(
        self, topic: str, value: bytes | None, key: bytes | None, partition: int, on_delivery: Any
    ) -> None:
        self.calls.append(topic)
        self.pending.append((on_delivery, topic, key, partition))

    def deliver(self, topic: str | None = None, error: Any = None) -> None:
        keep = []
        for callback, t, key, p in self.pending:
            if topic is None or t == topic:
                self.answered.append((callback, error))
            else:
                keep.append((callback, t, key, p))
        self.pending = keep

    def poll(self, _timeout: float = 0) -> int:
        answered, self.answered = self.answered, []
        for callback, error in answered:
            callback(error, None)
        return len(answered)

    def flush(self, _timeout: float = 0) -> int:
        self.deliver()
        self.poll()
        return 0


@pytest.fixture(scope="module")
def beats(small_model: Path) -> tuple[np.ndarray, np.ndarray]:
    """(normal beats, anomalous beats) that the small model scores well away from its threshold."""
    model = load_model(small_model)
    values, _ = load_test_split()
    score = model.score(values.astype(np.float32)).score
    return values[score < 0.5 * model.threshold][:20], values[score > 2 * model.threshold][:20]


def _settings(*argv: str):
    parser = argparse.ArgumentParser()
    configure(parser)
    return load_settings(
        parser.parse_args(["--model", "m.onnx", "--input-topic", "in", "--commit-interval-ms", "1", *argv]),
        {},
    )


def _pipeline(small_model: Path) -> tuple[ScoringPipeline, EpisodeStore]:
    model = load_model(small_model)
    outputs = OutputBuilder("anomalies", "", "dlq", "g", "w", OutputLimits([], lambda t, timeout: {}))
    store = EpisodeStore(EpisodeRules(2, 3, 2, 60_000, 0), "alerts")
    decoder = BeatDecoder(model.metadata.input_length, 65536, 1024)
    return ScoringPipeline(model, decoder, outputs, WorkerMetrics(CollectorRegistry()), store), store


def _batch(pipeline: ScoringPipeline, values: np.ndarray, first: int) -> ScoredBatch:
    headers = m.beat_headers(m.BINARY_CONTENT_TYPE)
    records = [
        Record(
            "in", 0, first + i, 1_700_000_000_000 + 1000 * (first + i), b"s", m.encode_beat_binary(v), headers
        )
        for i, v in enumerate(values)
    ]
    (batch,) = pipeline.submit(Records.of(records), time.time())
    return batch


def _settle(delivery: AtLeastOnce) -> None:
    """Settle once the commit interval (1 ms here) has passed: each settle may start a checkpoint."""
    time.sleep(0.002)
    delivery.settle()


def test_at_least_once_writes_the_changelog_after_the_outputs_and_commits_after_the_changelog(
    small_model: Path, beats: tuple[np.ndarray, np.ndarray]
) -> None:
    normal, anomalous = beats
    pipeline, _ = _pipeline(small_model)
    producer, consumer = _Producer(), Consumer()
    settings = _settings()
    delivery = AtLeastOnce(
        settings,
        consumer,
        producer,
        Watchdog(),
        pipeline._metrics,
        lambda t: None,
        lambda: None,
        ChangelogWriter(LOG),
    )  # type: ignore[arg-type]
    batch = _batch(pipeline, anomalous[:3], 0)  # opens an episode: an alert record
    assert any(r.topic == "alerts" for r in batch.outputs.records)
    delivery.publish(batch)
    _settle(delivery)
    assert LOG not in producer.calls and consumer.commits == []  # outputs not acknowledged yet
    producer.deliver("anomalies")
    _settle(delivery)
    assert LOG not in producer.calls  # the alert record is still out
    producer.deliver("alerts")
    _settle(delivery)
    assert producer.calls.count(LOG) == 2 and consumer.commits == []  # source s and the clock
    assert {p for _, t, _, p in producer.pending if t == LOG} == {0}
    producer.deliver(LOG, error=KafkaError(KafkaError._MSG_TIMED_OUT))
    _settle(delivery)  # a failed changelog write commits nothing and is written again
    assert consumer.commits == [] and producer.calls.count(LOG) == 4
    assert (
        pipeline._metrics.registry.get_sample_value("ecg_processing_errors_total", {"stage": "changelog"})
        == 1
    )
    delivery.publish(_batch(pipeline, normal[:1], 3))
    _settle(delivery)  # the next batch retires (nothing to acknowledge) but waits for its own checkpoint
    assert consumer.commits == []
    producer.deliver(LOG)
    _settle(delivery)
    assert consumer.commits == [[(0, 3)]] and producer.calls.count(LOG) == 6
    producer.deliver(LOG)
    _settle(delivery)
    assert consumer.commits == [[(0, 3)], [(0, 4)]]
    pipeline.close()


def test_exactly_once_puts_alerts_changelog_and_offsets_in_one_transaction(
    small_model: Path, beats: tuple[np.ndarray, np.ndarray]
) -> None:
    normal, anomalous = beats
    pipeline, store = _pipeline(small_model)
    producer, consumer, writer = _Producer(), Consumer(), ChangelogWriter(LOG)
    delivery = ExactlyOnce(
        _settings(), consumer, producer, Watchdog(), pipeline._metrics, lambda t: None, writer
    )  # type: ignore[arg-type]
    assert delivery.publish(_batch(pipeline, anomalous[:2], 0)) is None
    assert producer.calls == ["begin", "anomalies", "anomalies", "alerts", LOG, LOG, "offsets 0:2", "commit"]
    batch = _batch(pipeline, normal[:2], 2)  # closes it: s is written empty
    producer.fail_commit = KafkaError(KafkaError._TIMED_OUT)
    assert delivery.publish(batch) == {("in", 0): 2}  # aborted: its empty value is not acknowledged
    producer.fail_commit, producer.calls = None, []
    assert delivery.publish(batch) is None
    assert producer.calls == ["begin", "alerts", LOG, LOG, "offsets 0:4", "commit"]
    producer.calls = []
    assert delivery.publish(_batch(pipeline, normal[2:3], 4)) is None  # the empty was committed: delete s
    assert producer.calls == ["begin", LOG, LOG, "offsets 0:5", "commit"]
    assert store.sources == 0 and writer.records({0: {}})[0] == []
    assert CLOCK_KEY != b"s"
    pipeline.close()


def test_a_new_producer_waits_for_the_checkpoint_the_old_one_is_writing(
    small_model: Path, beats: tuple[np.ndarray, np.ndarray]
) -> None:
    """At-least-once: output limits changed (a new producer) while a checkpoint's changelog records
    were out; only the old producer reports on them, so it is flushed first (else never committed)."""
    _, anomalous = beats
    pipeline, _ = _pipeline(small_model)
    old, new, consumer = _Producer(), _Producer(), Consumer()
    delivery = AtLeastOnce(
        _settings(),
        consumer,
        old,
        Watchdog(),
        pipeline._metrics,
        lambda t: None,
        lambda: None,
        ChangelogWriter(LOG),
    )  # type: ignore[arg-type]
    delivery.publish(_batch(pipeline, anomalous[:3], 0))
    old.deliver("anomalies")
    old.deliver("alerts")
    _settle(delivery)
    assert old.pending and not delivery.idle()  # the changelog write is out
    delivery.replace_producer(new)  # type: ignore[arg-type]
    _settle(delivery)
    assert consumer.commits == [[(0, 3)]] and delivery.idle()
    pipeline.close()


def test_a_restore_that_cannot_read_the_committed_offsets_is_one_fatal_line() -> None:
    class Consumer:
        def committed(self, _partitions: list[TopicPartition], _timeout: float) -> list[TopicPartition]:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    store = EpisodeStore(EpisodeRules(2, 3, 2, 60_000, 0), "alerts")
    partitions = EpisodePartitions(store, ChangelogWriter(LOG), None, WorkerMetrics(CollectorRegistry()), 1.0)  # type: ignore[arg-type]
    with pytest.raises(FatalError, match="cannot read the committed offsets"):
        partitions.assigned(Consumer(), [TopicPartition("in", 0)])  # type: ignore[arg-type]


def test_a_changelog_write_refused_for_want_of_an_acl_is_retried_in_place_not_the_exit(
    small_model: Path, beats: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    """As for the outputs (a restart would not grant the ACL): no exit after five, not ready meanwhile,
    and the line says which ACL; once granted, the write goes through and the offsets are committed."""
    _, anomalous = beats
    pipeline, _ = _pipeline(small_model)
    producer, consumer = _Producer(), Consumer()
    delivery = AtLeastOnce(
        _settings(),
        consumer,
        producer,
        Watchdog(),
        pipeline._metrics,
        lambda t: None,
        lambda: None,
        ChangelogWriter(LOG),
    )  # type: ignore[arg-type]
    delivery.publish(_batch(pipeline, anomalous[:3], 0))
    producer.deliver("anomalies")
    producer.deliver("alerts")
    _settle(delivery)
    assert not delivery.changelog_denied
    refused = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    for _ in range(8):  # more than the five failed writes in a row that end the worker otherwise
        producer.deliver(LOG, error=refused)
        _settle(delivery)
        assert delivery.changelog_denied and consumer.commits == []
    assert (
        f"not authorised to WRITE to topic {LOG}: an ACL is missing (grant WRITE on topic {LOG}"
        in caplog.text
    )
    producer.deliver(LOG)  # granted
    _settle(delivery)
    assert consumer.commits == [[(0, 3)]] and not delivery.changelog_denied
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)  # any other failure: five in a row exit
    delivery.publish(_batch(pipeline, anomalous[3:4], 3))
    producer.deliver("anomalies")
    producer.deliver("alerts")
    _settle(delivery)
    with pytest.raises(FatalError, match="5 episode changelog writes in a row failed"):
        for _ in range(5):
            producer.deliver(LOG, error=timed_out)
            _settle(delivery)
    pipeline.close()
