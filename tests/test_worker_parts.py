"""The worker's parts without a broker, through their public methods: pipeline, delivery, rebalance,
counting, readiness, metrics helpers, the in-flight bookkeeping and the broker link."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker import pipeline as scoring_pipeline
from ecg_anomaly.worker.broker_link import BrokerLink
from ecg_anomaly.worker.clients import FatalError, exit_code_for, fatal, fenced
from ecg_anomaly.worker.decode import BeatDecoder
from ecg_anomaly.worker.delivery import AtLeastOnce, ExactlyOnce
from ecg_anomaly.worker.health import HealthState
from ecg_anomaly.worker.inflight import Batch, InFlight, earliest
from ecg_anomaly.worker.logs import RepeatFilter
from ecg_anomaly.worker.loop import publish_in_order
from ecg_anomaly.worker.metrics import WorkerMetrics, observe_many
from ecg_anomaly.worker.model import load_model
from ecg_anomaly.worker.outputs import OutputBuilder
from ecg_anomaly.worker.pipeline import (
    GIL_SWITCH_INTERVAL_S,
    SCORE_AHEAD,
    SCORE_AHEAD_FROM,
    SCORING_NICE,
    BatchFailed,
    ScoredBatch,
    ScoringPipeline,
)
from ecg_anomaly.worker.rebalance import Rebalance
from ecg_anomaly.worker.records import Record, Records
from ecg_anomaly.worker.settings import configure, load_settings
from ecg_anomaly.worker.tally import Counter, Tally
from ecg_anomaly.worker.topic_limits import OutputLimits
from ecg_anomaly.worker.watchdog import Watchdog
from tests.support.broker import REPO
from tests.support.fake_clients import Consumer, Transactions

DEFAULT_LIMITS = OutputLimits([], lambda topics, timeout: {})  # Kafka's defaults for every topic


def _settings(*argv: str):
    parser = argparse.ArgumentParser()
    configure(parser)
    return load_settings(parser.parse_args(["--model", "m.onnx", "--input-topic", "in", *argv]), {})


def _binary(partition: int, offsets: range, timestamp: int = 1_700_000_000_000) -> Records:
    beat, headers = m.encode_beat_binary(np.zeros(m.BEAT_LENGTH)), m.beat_headers(m.BINARY_CONTENT_TYPE)
    return Records.of([Record("in", partition, o, timestamp, b"s", beat, headers) for o in offsets])


def _pipeline(model: Path, metrics: WorkerMetrics | None = None) -> ScoringPipeline:
    loaded = load_model(model)
    outputs = OutputBuilder("anomalies", "scores", "dlq", "g", "w", DEFAULT_LIMITS)
    decoder = BeatDecoder(loaded.metadata.input_length, 65536, 1024)
    return ScoringPipeline(loaded, decoder, outputs, metrics or WorkerMetrics(CollectorRegistry()))


# --- the pipeline ------------------------------------------------------------------------------------


def test_a_large_batch_is_scored_ahead_and_handed_back_in_input_order(small_model: Path) -> None:
    pipeline = _pipeline(small_model)
    assert pipeline.submit(_binary(0, range(10, 10 + SCORE_AHEAD_FROM)), time.time()) == []  # scoring
    assert pipeline.holding
    ready = pipeline.submit(_binary(1, range(0, 3)), time.time())  # a trickle's batch: at once, after it
    assert [b.first for b in ready] == [{("in", 0): 10}, {("in", 1): 0}] and not pipeline.holding
    assert [b.after for b in ready] == [{("in", 0): 10 + SCORE_AHEAD_FROM}, {("in", 1): 3}]
    assert sum(len(b.outputs.records) for b in ready) == SCORE_AHEAD_FROM + 3 + int(
        sum(b.outputs.anomaly.sum() for b in ready)
    )  # a score record each, an event per flagged beat
    pipeline.close()


def test_large_batches_are_held_while_the_next_ones_are_scored(small_model: Path) -> None:
    pipeline = _pipeline(small_model)
    size = SCORE_AHEAD_FROM
    handed_back = [
        [b.first for b in pipeline.submit(_binary(0, range(i * size, (i + 1) * size)), time.time())]
        for i in range(SCORE_AHEAD + 2)
    ]
    assert SCORE_AHEAD == 2 and handed_back == [[], [], [{("in", 0): 0}], [{("in", 0): size}]]
    assert [b.first for b in pipeline.flush()] == [{("in", 0): 2 * size}, {("in", 0): 3 * size}]
    assert not pipeline.holding
    pipeline.close()


def test_large_records_are_held_one_batch_at_a_time(
    small_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches are held only while their records are small (binary beats): a second batch of
    JSON beats' size cost memory and no time."""
    n = SCORE_AHEAD_FROM
    monkeypatch.setattr(scoring_pipeline, "SCORE_AHEAD_BYTES", 2 * n * 4 * m.BEAT_LENGTH - 1)
    pipeline = _pipeline(small_model)
    handed_back = [
        [b.first for b in pipeline.submit(_binary(0, range(i * n, (i + 1) * n)), time.time())]
        for i in range(3)
    ]
    assert handed_back == [[], [{("in", 0): 0}], [{("in", 0): n}]]
    pipeline.close()


def test_held_batches_are_dropped_with_where_to_re_read_them(small_model: Path) -> None:
    pipeline = _pipeline(small_model)
    pipeline.submit(_binary(1, range(5, 5 + SCORE_AHEAD_FROM)), time.time())
    pipeline.submit(_binary(1, range(5 + SCORE_AHEAD_FROM, 5 + 2 * SCORE_AHEAD_FROM)), time.time())
    pipeline.submit(_binary(2, range(9, 9 + SCORE_AHEAD_FROM)), time.time())
    assert pipeline.drop() == {("in", 1): 5 + SCORE_AHEAD_FROM, ("in", 2): 9}
    assert not pipeline.holding and pipeline.flush() == []
    pipeline.close()


class _Unscorable:
    """A model whose onnxruntime call fails."""

    def __init__(self, model: Any) -> None:
        self.threshold, self.version = model.threshold, model.version

    def score(self, beats: np.ndarray) -> Any:
        raise RuntimeError("onnxruntime failed")


def test_a_failed_batch_rewinds_the_batches_finished_before_it_too(small_model: Path) -> None:
    """A small batch is finished at once, after the held ones: when it fails, they were finished
    but not handed back, so they are re-read with it (before the fix they were skipped)."""
    pipeline = _pipeline(small_model)
    pipeline.submit(_binary(0, range(10, 10 + SCORE_AHEAD_FROM)), time.time())
    pipeline.use(_Unscorable(pipeline.model), pipeline.decoder)  # type: ignore[arg-type]
    with pytest.raises(BatchFailed) as failed:
        pipeline.submit(_binary(0, range(10 + SCORE_AHEAD_FROM, 13 + SCORE_AHEAD_FROM)), time.time())
    assert failed.value.rewind == {("in", 0): 10} and failed.value.stage == "score"
    assert pipeline.drop() == {("in", 0): 10 + SCORE_AHEAD_FROM}
    pipeline.close()


def test_the_scoring_thread_gets_the_gil_back_without_waiting_five_milliseconds(
    small_model: Path,
) -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)  # Python's default
        _pipeline(small_model).close()
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_INTERVAL_S)
    finally:
        sys.setswitchinterval(before)


# --- delivery -----------------------------------------------------------------------------------------


class _Message:
    def __init__(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


class _Producer(Transactions):
    """Records produce calls; deliveries happen when the test says (``deliver``) or on flush."""

    def __init__(self, fail_commit: KafkaError | None = None) -> None:
        self.pending: list[tuple[Any, _Message]] = []
        self.calls: list[str] = []
        self.fail_commit = fail_commit

    def produced(
        self, topic: str, value: bytes | None, key: bytes | None, partition: int, on_delivery: Any
    ) -> None:
        self.calls.append("produce")
        self.pending.append((on_delivery, _Message(topic, key, value)))

    def deliver(self, count: int | None = None, error: Any = None) -> None:
        for callback, message in self.pending[:count]:
            callback(error, message)
        self.pending = self.pending[len(self.pending[:count]) :]

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        self.deliver()
        return 0


def _scored(pipeline: ScoringPipeline, partition: int, offsets: range) -> ScoredBatch:
    (batch,) = pipeline.submit(_binary(partition, offsets), time.time())
    return batch


def test_at_least_once_commits_a_batch_once_it_and_every_earlier_one_are_acknowledged(
    small_model: Path,
) -> None:
    pipeline, producer, consumer, done = _pipeline(small_model), _Producer(), Consumer(), []
    delivery = AtLeastOnce(
        _settings(), consumer, producer, Watchdog(), pipeline._metrics, done.append, lambda: None
    )  # type: ignore[arg-type]
    first, second = _scored(pipeline, 0, range(0, 3)), _scored(pipeline, 0, range(3, 5))
    delivery.publish(first)
    delivery.publish(second)
    n_first = len(first.outputs.records)
    producer.pending = (
        producer.pending[n_first:] + producer.pending[:n_first]
    )  # the second is acknowledged first
    producer.deliver(len(second.outputs.records))
    assert delivery.settle() is None and consumer.commits == [] and not delivery.idle()
    producer.deliver()
    assert delivery.settle() is None
    assert consumer.commits == [[(0, 5)]] and [t.consumed for t in done] == [3, 2] and delivery.idle()


def test_at_least_once_rewinds_to_the_first_batch_not_acknowledged(small_model: Path) -> None:
    pipeline, producer, consumer, done = _pipeline(small_model), _Producer(), Consumer(), []
    delivery = AtLeastOnce(
        _settings(), consumer, producer, Watchdog(), pipeline._metrics, done.append, lambda: None
    )  # type: ignore[arg-type]
    delivery.publish(_scored(pipeline, 0, range(0, 3)))
    delivery.publish(_scored(pipeline, 0, range(3, 6)))
    producer.deliver(error=KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert delivery.settle() == {("in", 0): 0}
    assert consumer.commits == [] and done == [] and delivery.idle()


def test_exactly_once_puts_outputs_and_offsets_in_one_transaction(small_model: Path) -> None:
    pipeline, producer, consumer, done = _pipeline(small_model), _Producer(), Consumer(), []
    delivery = ExactlyOnce(_settings(), consumer, producer, Watchdog(), pipeline._metrics, done.append)  # type: ignore[arg-type]
    batch = _scored(pipeline, 2, range(7, 9))
    assert delivery.publish(batch) is None
    assert producer.calls == ["begin", *["produce"] * len(batch.outputs.records), "offsets 2:9", "commit"]
    assert [t.consumed for t in done] == [2]


def test_exactly_once_aborts_a_failed_transaction_and_rewinds_it(small_model: Path) -> None:
    pipeline, consumer, done = _pipeline(small_model), Consumer(), []
    producer = _Producer(fail_commit=KafkaError(KafkaError._TIMED_OUT))
    delivery = ExactlyOnce(
        _settings("--kafka-timeout", "1"), consumer, producer, Watchdog(), pipeline._metrics, done.append
    )  # type: ignore[arg-type]
    assert delivery.publish(_scored(pipeline, 2, range(7, 9))) == {("in", 2): 7}
    assert producer.calls[-1] == "abort" and done == []
    fenced_out = _Producer(fail_commit=KafkaError(KafkaError._FENCED, fatal=True))
    delivery.replace_producer(fenced_out)  # type: ignore[arg-type]
    with pytest.raises(FatalError) as exit_:
        delivery.publish(_scored(pipeline, 2, range(7, 9)))
    assert exit_.value.exit_code == 3


def test_after_a_failed_batch_the_later_ones_are_not_published_but_re_read_with_it(small_model: Path) -> None:
    """Exactly-once: the second batch of a turn, published after the first one's transaction
    aborted, committed offsets past the first one's records (which were then re-read)."""
    pipeline, consumer, done = _pipeline(small_model), Consumer(), []
    producer = _Producer(fail_commit=KafkaError(KafkaError._TIMED_OUT))
    delivery = ExactlyOnce(
        _settings("--kafka-timeout", "1"), consumer, producer, Watchdog(), pipeline._metrics, done.append
    )  # type: ignore[arg-type]
    batches = [
        _scored(pipeline, 0, range(0, 3)),
        _scored(pipeline, 0, range(3, 5)),
        _scored(pipeline, 1, range(7, 9)),
    ]
    assert publish_in_order(batches, delivery.publish) == {("in", 0): 0, ("in", 1): 7}
    assert producer.calls.count("begin") == 1 and producer.calls[-1] == "abort" and done == []
    producer.fail_commit = None
    assert publish_in_order(batches, delivery.publish) is None and len(done) == 3
    pipeline.close()


# --- rebalance and readiness ------------------------------------------------------------------------


def test_an_idle_member_is_ready_and_says_so_in_a_metric(small_model: Path) -> None:
    """A surge pod at replicas = partitions gets no partition: it has joined, it is ready."""
    metrics = WorkerMetrics(CollectorRegistry())
    pipeline = _pipeline(small_model, metrics)
    delivery = ExactlyOnce(_settings(), Consumer(), _Producer(), Watchdog(), metrics, lambda t: None)  # type: ignore[arg-type]
    link = BrokerLink()
    rebalance = Rebalance(pipeline, delivery, metrics, link, delivery.publish)
    health = HealthState(60)
    health.model_loaded = True
    health.broker_connected = True
    health.joined = rebalance.joined
    assert not health.ready()  # before the first rebalance completes
    rebalance.on_assign(None, [])
    health.joined = rebalance.joined
    assert health.ready() and link.connected
    assert metrics.registry.get_sample_value("ecg_assigned_partitions") == 0
    rebalance.on_assign(None, [TopicPartition("in", 0), TopicPartition("in", 1)])
    assert metrics.registry.get_sample_value("ecg_assigned_partitions") == 2
    rebalance.on_revoke(None, [TopicPartition("in", 0)])
    assert not rebalance.joined and metrics.registry.get_sample_value("ecg_assigned_partitions") == 1
    pipeline.close()


def test_a_revoke_publishes_the_held_batches_or_forgets_them_all(small_model: Path) -> None:
    """Before a revoke the held batches are published; when one fails, it and those after it are
    forgotten (their partitions' next owner re-reads them), not published later for partitions this
    member no longer owns."""
    metrics = WorkerMetrics(CollectorRegistry())
    pipeline = _pipeline(small_model, metrics)
    producer = _Producer()
    delivery = ExactlyOnce(_settings(), Consumer(), producer, Watchdog(), metrics, lambda t: None)  # type: ignore[arg-type]
    rebalance = Rebalance(pipeline, delivery, metrics, BrokerLink(), delivery.publish)
    rebalance.on_assign(None, [TopicPartition("in", 0)])
    n = SCORE_AHEAD_FROM
    pipeline.submit(_binary(0, range(0, n)), time.time())
    pipeline.submit(_binary(0, range(n, 2 * n)), time.time())
    rebalance.on_revoke(None, [TopicPartition("in", 0)])
    assert producer.calls.count("commit") == 2 and not pipeline.holding
    rebalance.on_assign(None, [TopicPartition("in", 0)])
    pipeline.use(_Unscorable(pipeline.model), pipeline.decoder)  # type: ignore[arg-type]
    pipeline.submit(_binary(0, range(2 * n, 3 * n)), time.time())
    pipeline.submit(_binary(0, range(3 * n, 4 * n)), time.time())
    rebalance.on_revoke(None, [TopicPartition("in", 0)])
    assert producer.calls.count("commit") == 2 and not pipeline.holding
    assert metrics.registry.get_sample_value("ecg_processing_errors_total", {"stage": "score"}) == 1
    pipeline.close()


# --- counting -----------------------------------------------------------------------------------------


def test_end_to_end_latency_is_split_into_fetch_process_and_publish(small_model: Path) -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    pipeline = _pipeline(small_model, metrics)
    polled_at = time.time()  # taken from the client now; produced 200 ms ago
    (batch,) = pipeline.submit(_binary(0, range(3), timestamp=int(polled_at * 1000) - 200), polled_at)
    tally = Tally.of(batch)
    time.sleep(0.05)  # the broker takes its time to acknowledge
    assert metrics.registry.get_sample_value("ecg_last_batch_timestamp_seconds") == 0
    counted_from = time.time()
    Counter(metrics).count(tally)
    counted_by = time.time()

    def sample(name: str, stage: str = "") -> float:
        value = metrics.registry.get_sample_value(name, {"stage": stage} if stage else {})
        assert value is not None
        return value

    assert sample("ecg_stage_latency_seconds_count", "fetch") == 3  # per beat
    assert 0.19 <= sample("ecg_stage_latency_seconds_sum", "fetch") / 3 < 0.25
    assert sample("ecg_stage_latency_seconds_count", "process") == 1  # per batch
    assert 0 <= sample("ecg_stage_latency_seconds_sum", "process") < 0.2  # decode, score, events
    assert sample("ecg_stage_latency_seconds_count", "publish") == 1
    assert 0.05 <= sample("ecg_stage_latency_seconds_sum", "publish") < 1.0
    assert sample("ecg_end_to_end_latency_seconds_sum") / 3 >= 0.25
    assert sample("ecg_beats_consumed_total") == 3
    assert counted_from <= sample("ecg_last_batch_timestamp_seconds") <= counted_by
    pipeline.close()


def test_dead_letter_log_lines_are_one_per_interval_with_counts(
    small_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    pipeline, counter = _pipeline(small_model, metrics), Counter(metrics)
    bad = Records.of([Record("in", 0, o, 1, b"s", b"not json", m.beat_headers()) for o in range(4)])
    with caplog.at_level(logging.INFO):
        for _ in range(50):
            (batch,) = pipeline.submit(bad, time.time())
            counter.count(Tally.of(batch))
    lines = [r for r in caplog.records if r.getMessage() == "records dead-lettered"]
    assert len(lines) == 1 and lines[0].by_reason == {"invalid_json": 4}  # type: ignore[attr-defined]
    assert metrics.registry.get_sample_value("ecg_dead_letters_total", {"reason": "invalid_json"}) == 200
    pipeline.close()


# --- the rest ------------------------------------------------------------------------------------------


def test_the_worker_imports_neither_tensorflow_nor_the_trainer_nor_kafka_python() -> None:
    code = (
        "import sys, ecg_anomaly.cli, ecg_anomaly.worker.cli, ecg_anomaly.worker.loop; "
        "banned = ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'kafka'); "
        "above = ('ecg_anomaly.trainer', 'ecg_anomaly.tools'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in banned or m.startswith(above)); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_are_preinitialised_with_fixed_labels() -> None:
    text = generate_latest(WorkerMetrics().registry).decode()
    for reason in m.DEAD_LETTER_REASONS:
        assert f'ecg_dead_letters_total{{reason="{reason}"}} 0.0' in text
    assert 'ecg_processing_errors_total{stage="model_reload"} 0.0' in text
    assert 'ecg_labelled_beats_total{label="anomaly",outcome="normal"} 0.0' in text


@pytest.mark.parametrize(
    "values",
    [
        np.array([0.05, 0.1, 0.3, 0.5, 0.7, 1.0, 2.0]),  # a few: placed one by one
        np.random.default_rng(7).choice([0.05, 0.1, 0.3, 0.5, 0.7, 1.0, 2.0], 100),  # many: vectorised
    ],
)
def test_observe_many_counts_like_observe(values: np.ndarray) -> None:
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h", "h", buckets=(0.1, 0.5, 1.0), registry=one)
    h2 = Histogram("h", "h", buckets=(0.1, 0.5, 1.0), registry=many)
    for v in values:
        h1.observe(float(v))
    observe_many(h2, values)
    samples = [
        {s.name + str(s.labels): s.value for s in next(iter(reg.collect())).samples} for reg in (one, many)
    ]
    for name in ("h_created{}", "h_sum{}"):
        assert samples[1].pop(name) == pytest.approx(samples[0].pop(name))  # numpy sums pairwise
    assert samples[0] == samples[1]  # every bucket and the count, exactly


def _batch(first: int, after: int, outputs: int, retired: list[int]) -> Batch:
    return Batch({("t", 0): first}, {("t", 0): after}, after - first, outputs, lambda: retired.append(first))


def test_earliest_takes_each_partitions_lowest_offset_whatever_the_order() -> None:
    a, b = ("t", 0), ("t", 1)
    assert earliest({a: 9, b: 4}, {a: 3}, {b: 7, ("u", 0): 1}) == {a: 3, b: 4, ("u", 0): 1}
    assert earliest({a: 3}, {a: 9}) == earliest({a: 9}, {a: 3}) == {a: 3}
    assert earliest() == {}


def test_in_flight_batches_retire_in_input_order_and_stop_at_a_failure() -> None:
    """At-least-once: an offset is committable only once its outputs and all earlier ones are acknowledged."""
    retired: list[int] = []
    flight = InFlight(limit=30)  # input records
    a, b, c = _batch(0, 10, 2, retired), _batch(10, 20, 1, retired), _batch(20, 30, 0, retired)
    for batch in (a, b, c):
        flight.add(batch)
    assert flight.full()
    b.delivered(None)  # the second batch is done before the first: nothing is committable yet
    assert flight.retire() == ({}, None) and retired == []
    a.delivered(None)
    a.delivered(None)
    assert flight.retire() == ({("t", 0): 30}, None)  # all three, counted once each, in order
    assert retired == [0, 10, 20] and len(flight) == 0 and not flight.full()

    d, e = _batch(30, 40, 2, retired), _batch(40, 50, 1, retired)
    flight.add(d)
    flight.add(e)
    e.delivered(None)
    d.delivered("broker said no")
    d.delivered(None)
    offsets, failed = flight.retire()
    assert offsets == {} and failed is d and d.error == "broker said no" and retired == [0, 10, 20]
    assert flight.clear() == {("t", 0): 30} and len(flight) == 0  # rewind to the failed batch's start


def test_unsent_outputs_fail_their_batch() -> None:
    batch = _batch(0, 5, 3, [])
    batch.delivered(None)
    batch.unsent(2, "invalid topic", "ecg.anomalies")
    assert batch.remaining == 0 and batch.error == "invalid topic"


def test_broker_link_reads_connectivity_and_lag_from_statistics() -> None:
    link = BrokerLink()
    active = {"fetch_state": "active"}
    stats = {
        "brokers": {"localhost:9092/1": {"state": "UP"}, "GroupCoordinator": {"state": "UP"}},
        "topics": {
            "beats": {
                "partitions": {
                    "0": {**active, "app_offset": 90, "committed_offset": 80, "hi_offset": 100},
                    "1": {**active, "app_offset": -1001, "committed_offset": 5, "hi_offset": 7},
                    "2": {"fetch_state": "none", "app_offset": -1001, "hi_offset": 9},
                    "-1": {"fetch_state": "none", "app_offset": -1001, "hi_offset": -1},
                }
            }
        },
    }
    link.on_stats(orjson.dumps(stats).decode())
    assert link.connected and link.lag == {0: 10, 1: 2}
    stats["brokers"] = {"localhost:9092/1": {"state": "CONNECT"}, "GroupCoordinator": {"state": "DOWN"}}
    link.on_stats(orjson.dumps(stats).decode())
    assert not link.connected  # a crashed broker: its connection is no longer UP
    link.connected = True
    link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert not link.connected and link.fatal is None
    link.on_error(KafkaError(KafkaError.FENCED_INSTANCE_ID, fatal=True))  # the loop exits on this
    assert link.fatal is not None and exit_code_for(link.fatal) == 1
    assert exit_code_for(KafkaError(KafkaError._FENCED, fatal=True)) == 3


def test_a_fatal_consumer_error_reported_to_the_error_callback_ends_the_loop() -> None:
    """librdkafka reports a consumer's fatal error as _FATAL, without the fatal flag (seen in chaos 4)."""
    fenced_member = KafkaError(
        KafkaError._FATAL,
        "Fatal error: Broker: Static consumer fenced by other consumer with same group.instance.id",
    )
    assert not fenced_member.fatal()
    producer_side = BrokerLink()
    producer_side.on_error(fenced_member)  # the producer's calls raise with the specific code instead
    assert producer_side.fatal is None
    consumer_side = BrokerLink()
    consumer_side.on_consumer_error(fenced_member)
    assert consumer_side.fatal is fenced_member and exit_code_for(fenced_member) == 1


def test_fencing_and_fatal_errors_are_recognised() -> None:
    assert fenced(KafkaException(KafkaError(KafkaError._FENCED, fatal=True)))
    assert fenced(KafkaException(KafkaError(KafkaError.PRODUCER_FENCED)))
    assert fenced(KafkaException(KafkaError(KafkaError.INVALID_PRODUCER_EPOCH)))
    assert fatal(KafkaException(KafkaError(KafkaError._INCONSISTENT, fatal=True)))
    timeout = KafkaException(KafkaError(KafkaError._TIMED_OUT, retriable=True))
    assert not fenced(timeout) and not fatal(timeout)
    assert not fenced(RuntimeError("not a Kafka error"))


def test_repeated_client_log_lines_are_rate_limited_and_counted() -> None:
    keep = RepeatFilter(seconds=30)

    def line(message: str, at: float) -> logging.LogRecord:
        record = logging.makeLogRecord({"msg": message})
        record.created = at
        return record

    refused = [line(f"Connect to 127.0.0.1:{9000 + i} failed after {i} ms", 100 + i) for i in range(20)]
    assert [keep.filter(r) for r in refused] == [True] + [False] * 19  # one kind, whatever the numbers
    assert keep.filter(line("Disconnected: connection reset", 101))  # another kind passes
    later = line("Connect to 127.0.0.1:9 failed after 1 ms", 131)
    assert keep.filter(later) and later.suppressed == 19


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is Linux's")
def test_the_scoring_thread_runs_behind_the_loop(small_model: Path) -> None:
    """The thread that scores batches ahead is SCORING_NICE steps nicer than the loop's thread."""
    pipeline = _pipeline(small_model)
    pipeline.submit(_binary(0, range(SCORE_AHEAD_FROM)), time.time())  # starts the scoring thread
    scoring = [t.native_id for t in threading.enumerate() if t.name.startswith("scoring")]
    loop = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert scoring  # this pipeline's, and any an earlier test left
    assert {os.getpriority(os.PRIO_PROCESS, t or 0) for t in scoring} == {min(loop + SCORING_NICE, 19)}
    pipeline.close()
