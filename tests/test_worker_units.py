"""Worker pieces without a broker: settings, decoding, outputs, metrics helpers."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.base.kafka import SECRETS
from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker.decode import BeatDecoder
from ecg_anomaly.worker.events import OutputBuilder
from ecg_anomaly.worker.health import HealthState
from ecg_anomaly.worker.inflight import Batch, InFlight
from ecg_anomaly.worker.kafka_io import (
    BrokerLink,
    Record,
    Watchdog,
    exit_code_for,
    fatal,
    fenced,
)
from ecg_anomaly.worker.loop import SCORE_AHEAD_FROM, Worker
from ecg_anomaly.worker.metrics import WorkerMetrics, observe_many
from ecg_anomaly.worker.model import Scores, load_model
from ecg_anomaly.worker.options import ALL_OPTIONS
from ecg_anomaly.worker.settings import configure, load_settings
from ecg_anomaly.worker.topic_limits import OutputLimits
from tests.support.broker import REPO
from tests.support.poison import POISON, Poison

DEFAULT_LIMITS = OutputLimits([], lambda topics, timeout: {})  # Kafka's defaults for every topic


def _settings(argv: list[str], env: dict[str, str] | None = None):
    parser = argparse.ArgumentParser()
    configure(parser)
    return load_settings(parser.parse_args(argv), env or {})


def test_flag_beats_env_beats_default() -> None:
    s = _settings(["--model", "m.onnx", "--max-batch", "64"], {"ECG_MAX_BATCH": "32", "ECG_LINGER_MS": "9"})
    assert (s.max_batch, s.linger_ms, s.fetch_max_wait_ms) == (64, 9, 20)
    assert s.model == Path("m.onnx") and not s.exactly_once


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["--max-batch", "0"], {}, "--max-batch"),
        (["--threshold", "nan"], {}, "--threshold"),
        ([], {"ECG_HTTP_PORT": "http"}, "ECG_HTTP_PORT"),
        (["--model-sha256", "abc"], {}, "--model-sha256"),
        ([], {"ECG_GUARANTEE": "maybe-once"}, "ECG_GUARANTEE"),
        (["--security-protocol", "SASL_SSL", "--sasl-username", "u"], {}, "--security-protocol"),
        (["--ssl-cafile", "/no/such/ca.pem"], {}, "--ssl-cafile"),
    ],
)
def test_invalid_options_name_the_option(argv: list[str], env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        _settings(["--model", "m.onnx", *argv], env)


def test_model_is_required() -> None:
    with pytest.raises(ConfigError, match="--model"):
        _settings([])


def test_secrets_come_from_env_or_file_and_never_show(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("file-pw-123\n")
    s = _settings(
        [
            "--model",
            "m",
            "--security-protocol",
            "SASL_SSL",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "svc",
            "--sasl-password-file",
            str(secret_file),
        ],
        {"ECG_KAFKA_SSL_PASSWORD": "env-pw-456"},
    )
    config = s.kafka.client_config("w")
    assert config["sasl.password"] == "file-pw-123"
    assert config["ssl.key.password"] == "env-pw-456"
    assert (config["sasl.mechanism"], config["sasl.username"]) == ("SCRAM-SHA-512", "svc")
    for shown in (repr(s), str(s.public())):
        assert "file-pw-123" not in shown and "env-pw-456" not in shown


@dataclass
class Rec:
    value: bytes | None
    key: bytes | None = b"src"
    headers: list = field(default_factory=lambda: m.beat_headers())
    topic: str = "beats"
    partition: int = 0
    offset: int = 0
    timestamp: int = 1_700_000_000_000


def _decode(records: list[Rec], max_record_bytes: int = 65536):
    for i, r in enumerate(records):
        r.offset = i
    return BeatDecoder(m.BEAT_LENGTH, max_record_bytes, 1024).decode(records)


def test_decoder_fills_one_batch_from_json_and_binary() -> None:
    a = np.linspace(-3, 3, m.BEAT_LENGTH, dtype=np.float32)
    b = a[::-1].copy()
    batch = _decode(
        [
            Rec(
                m.encode_beat_json(
                    "p1", a, beat_time="2026-01-01T00:00:00+00:00", beat_id="x", label="normal"
                )
            ),
            Rec(m.encode_beat_binary(b), key=b"p2", headers=m.beat_headers(m.BINARY_CONTENT_TYPE)),
            Rec(m.encode_beat_json("p3", b), headers=[]),  # no content-type: JSON
        ]
    )
    assert batch.rejects == []
    assert np.array_equal(batch.beats, np.stack([a, b, b]))
    assert [x.source_id for x in batch.meta] == ["p1", "p3", "p2"]
    assert batch.meta[0].beat_time_ms == 1_767_225_600_000 and batch.meta[0].label == "normal"
    assert batch.meta[1].beat_time_ms == 1_700_000_000_000  # record timestamp when absent


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (Rec(m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH, beat_time="yesterday")), "wrong_type"),
        (Rec(m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH, beat_time="2026-01-01T00:00:00")), "wrong_type"),
        (Rec(orjson.dumps({"source_id": 5, "values": [0.0] * m.BEAT_LENGTH})), "wrong_type"),
        (Rec(orjson.dumps([1, 2])), "wrong_type"),
        (
            Rec(orjson.dumps({"source_id": "p", "values": [0.0] * m.BEAT_LENGTH, "label": "ill"})),
            "wrong_type",
        ),
        (Rec(orjson.dumps({"source_id": "p", "values": [[0.0]] * m.BEAT_LENGTH})), "wrong_type"),
        (Rec(orjson.dumps({"source_id": "p"})), "missing_field"),
        (Rec(b""), "empty_value"),
        (Rec(b"x" * 2000), "oversized"),
        (Rec(b"{}", headers=[("content-type", b"application/avro")]), "unknown_content_type"),
        (Rec(b"\x80abc"), "undecodable_bytes"),
        (Rec(b"{'single': 'quotes'}"), "invalid_json"),
        (Rec(b'{"source_id": "p", "values": [NaN]}'), "invalid_json"),
        (Rec(b"\0" * 560, key=b"\xff", headers=m.beat_headers(m.BINARY_CONTENT_TYPE)), "undecodable_bytes"),
        # a record timestamp that stands in for an absent beat_time is held to the same range
        (Rec(b"\0" * 560, headers=m.beat_headers(m.BINARY_CONTENT_TYPE), timestamp=10**17), "wrong_type"),
        (Rec(m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH), timestamp=m.MAX_BEAT_TIME_MS + 1), "wrong_type"),
    ],
)
def test_decoder_reasons(record: Rec, reason: str) -> None:
    good = Rec(m.encode_beat_json("p", [1.0] * m.BEAT_LENGTH))
    batch = _decode([good, record], max_record_bytes=1500 if reason == "oversized" else 65536)
    assert [r.reason.value for r in batch.rejects] == [reason]
    assert len(batch.meta) == 1 and batch.meta[0].record is good


@pytest.mark.parametrize("poison", POISON, ids=[p.name for p in POISON])
def test_decoder_gives_every_poison_kind_its_reason(poison: Poison) -> None:
    good = Rec(m.encode_beat_json("p", [1.0] * m.BEAT_LENGTH))
    now = int(time.time() * 1000)
    bad = Rec(poison.value, key=poison.key, headers=poison.headers)
    if poison.stamp is not None:
        bad.timestamp = poison.stamp(now)
    for i, r in enumerate((good, bad)):
        r.offset = i
    batch = BeatDecoder(m.BEAT_LENGTH, 65536, 1024).decode([good, bad])
    assert [r.reason.value for r in batch.rejects] == [poison.reason]
    assert [b.record for b in batch.meta] == [good]


def test_fast_and_careful_json_paths_decode_the_same_beats() -> None:
    """Legal shapes the fast path takes or leaves: the values and fields come out identical."""
    rng = np.random.default_rng(7)
    values = rng.normal(size=m.BEAT_LENGTH)
    ints = [int(v * 1000) for v in values]
    shapes = [
        m.encode_beat_json("p", values.astype(np.float32), beat_id="b1", label="anomaly", beat_time=5),
        orjson.dumps({"values": values.tolist(), "extra": {"nested": [1]}, "source_id": "p"}),  # 2 arrays
        orjson.dumps({"source_id": "p", "values": ints, "beat_time": "2026-01-01T00:00:00Z"}),
        b'  {"source_id": "p[1]", "values": ' + orjson.dumps(values.tolist()) + b"}  ",
        orjson.dumps({"source_id": "p", "values": [*values.tolist()[:-1], -0.0], "beat_time": 7.0}),
        orjson.dumps({"source_id": "p", "values": values.tolist(), "device": {"model": "x"}}),  # extra field
        orjson.dumps({"label": "normal", "values": values.tolist(), "beat_id": "b2", "source_id": "p"}),
    ]
    fast = BeatDecoder(m.BEAT_LENGTH, 65536, 1024)._json_fast
    assert [fast(v) is not None for v in shapes] == [True, False, True, False, True, True, True]
    batch = _decode([Rec(v) for v in shapes])
    assert batch.rejects == []
    for row, (raw, meta) in enumerate(zip(shapes, batch.meta, strict=True)):
        expected = orjson.loads(raw)
        assert np.array_equal(batch.beats[row], np.array(expected["values"], dtype=np.float32))
        assert (meta.source_id, meta.beat_id, meta.label) == (
            expected["source_id"],
            expected.get("beat_id"),
            expected.get("label"),
        )
    assert batch.meta[0].beat_time_ms == 5 and batch.meta[2].beat_time_ms == 1_767_225_600_000


def test_outputs_locate_the_error_and_copy_dead_letters_untouched() -> None:
    beats = [Rec(m.encode_beat_json(f"p{i}", [0.0] * m.BEAT_LENGTH, beat_id=f"b{i}")) for i in range(3)]
    bad = Rec(b"nope", headers=[("trace", b"1")])
    batch = _decode([*beats, bad])
    sample_error = np.full((3, m.BEAT_LENGTH), 0.001, dtype=np.float32)
    sample_error[1, 42] = 1.0  # beat 1 deviates at sample 42
    scores = Scores(np.array([0.01, 0.5, 0.02], dtype=np.float32), sample_error)
    builder = OutputBuilder("anomalies", "scores", "dlq", "group-1", "worker-1", DEFAULT_LIMITS)
    out = builder.build(batch.meta, scores, 0.1, "v1", batch.rejects)
    assert out.anomaly.tolist() == [False, True, False]
    by_topic: dict[str, list] = {}
    for r in out.records:
        by_topic.setdefault(r.topic, []).append(r)
    assert len(by_topic["scores"]) == 3 and len(by_topic["anomalies"]) == 1
    event = orjson.loads(by_topic["anomalies"][0].value)
    m.validate_event(event)
    assert event["error_location"]["window_start"] == 40 and event["error_location"]["peak_sample"] == 42
    assert event["severity"] == "critical" and event["event_id"] == m.event_id("beats", 0, 1)
    (dead,) = by_topic["dlq"]
    assert (dead.key, dead.value, dead.timestamp_ms) == (bad.key, bad.value, bad.timestamp)
    headers = dict(dead.headers)
    assert dead.headers[0] == ("trace", b"1")
    assert headers[m.DLQ_REASON] == b"invalid_json" and headers[m.DLQ_OFFSET] == b"3"
    assert headers[m.DLQ_CONSUMER_GROUP] == b"group-1"


def test_beat_times_at_both_ends_of_the_range_make_valid_events() -> None:
    """Epoch 0 and 9999-12-31T23:59:59.999Z are accepted and written as four-digit-year ISO times."""
    beats = [
        Rec(m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH, beat_time=0)),
        Rec(m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH, beat_time=m.MAX_BEAT_TIME_MS)),
        Rec(m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH, beat_time="9999-12-31T18:59:59.999-05:00")),
    ]
    batch = _decode(beats)
    assert not batch.rejects
    scores = Scores(np.ones(3, dtype=np.float32), np.ones((3, m.BEAT_LENGTH), dtype=np.float32))
    builder = OutputBuilder("anomalies", "", "dlq", "group-1", "worker-1", DEFAULT_LIMITS)
    out = builder.build(batch.meta, scores, 0.5, "v1", [])
    events = [orjson.loads(r.value) for r in out.records]
    for event in events:
        m.validate_event(event)
    assert [e["beat_time"] for e in events] == [
        "1970-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59.999Z",
    ]


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


def test_worker_imports_neither_tensorflow_nor_onnx() -> None:
    code = (
        "import sys, worker.cli, worker.loop, worker.model; "
        "banned = ('tensorflow', 'keras', 'tf2onnx', 'onnx'); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in banned); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_documents_every_option_and_reason() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Worker") :]
    for option in ALL_OPTIONS:
        assert f"| `{option.flag}` | `{option.env}` |" in section, option.flag
    for _, env, _ in SECRETS:
        assert f"`{env}`" in section
    for reason in m.DEAD_LETTER_REASONS:
        assert f"| `{reason}` |" in section


def _batch(first: int, after: int, outputs: int, retired: list[int]) -> Batch:
    return Batch({("t", 0): first}, {("t", 0): after}, after - first, outputs, lambda: retired.append(first))


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
    batch.unsent(2, "invalid topic")
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
    import logging

    from ecg_anomaly.worker.logs import RepeatFilter

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


class _Consumer:
    """The consumer calls the loop makes outside polling, recorded."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []
        self.commits: list[list[tuple[str, int, int]]] = []

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])


class _Producer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def produce(self, topic: str, value: bytes, key: bytes, **_: object) -> None:
        self.sent.append(value)

    def poll(self, _timeout: float = 0) -> int:
        return 0


def _unit_worker(model: Path) -> tuple[Worker, _Consumer, _Producer]:
    settings = _settings(["--model", str(model), "--input-topic", "in"])
    consumer, producer = _Consumer(), _Producer()
    worker = Worker(
        settings,
        load_model(model),
        consumer,  # type: ignore[arg-type]
        lambda bounds: producer,  # type: ignore[arg-type,return-value]
        DEFAULT_LIMITS,
        WorkerMetrics(CollectorRegistry()),
        HealthState(60),
        Watchdog(),
        BrokerLink(),
    )
    worker._assigned = {("in", 0), ("in", 1)}
    worker._stopping = True  # no retry back-off in a unit test
    return worker, consumer, producer


def _binary_records(partition: int, offsets: range, timestamp: int = 1_700_000_000_000) -> list[Record]:
    beat, headers = m.encode_beat_binary(np.zeros(m.BEAT_LENGTH)), m.beat_headers(m.BINARY_CONTENT_TYPE)
    return [Record("in", partition, o, timestamp, b"s", beat, headers) for o in offsets]


def test_a_batch_still_scoring_is_rewound_with_an_earlier_failed_one(small_model: Path) -> None:
    """Scoring runs a batch ahead: when batch N fails, batch N+1 is re-read too, whatever its partitions."""
    worker, consumer, producer = _unit_worker(small_model)
    size = SCORE_AHEAD_FROM  # large enough to be scored on the scoring thread
    worker._process(_binary_records(0, range(10, 10 + size)))  # batch N: scoring
    assert worker._pending is not None and producer.sent == []
    worker._process(_binary_records(1, range(5, 5 + size)))  # batch N+1 scoring, batch N published
    assert len(worker.in_flight) == 1
    worker._failed(worker.in_flight.clear())  # batch N's outputs failed
    assert sorted(consumer.seeks) == [("in", 0, 10), ("in", 1, 5)]
    assert worker._pending is None


def test_a_small_batch_is_scored_and_published_at_once_after_the_one_still_scoring(small_model: Path) -> None:
    worker, _consumer, _producer = _unit_worker(small_model)
    worker._process(_binary_records(0, range(0, SCORE_AHEAD_FROM)))  # scoring ahead
    worker._process(_binary_records(1, range(0, 3)))  # a trickle's batch
    assert worker._pending is None
    assert [b.first for b in worker.in_flight._batches] == [{("in", 0): 0}, {("in", 1): 0}]  # input order


def test_end_to_end_latency_is_split_into_fetch_process_and_publish(small_model: Path) -> None:
    worker, consumer, _producer = _unit_worker(small_model)
    worker._polled_at = time.time()  # taken from the client now; produced 200 ms ago
    worker._process(_binary_records(0, range(3), timestamp=int(worker._polled_at * 1000) - 200))
    time.sleep(0.05)  # the broker takes its time to acknowledge
    for batch in worker.in_flight._batches:
        batch.remaining = 0
    worker._settle()
    assert consumer.commits == [[("in", 0, 3)]]

    def sample(name: str, stage: str = "") -> float:
        value = worker.metrics.registry.get_sample_value(name, {"stage": stage} if stage else {})
        assert value is not None
        return value

    assert sample("ecg_stage_latency_seconds_count", "fetch") == 3  # per beat
    assert 0.19 <= sample("ecg_stage_latency_seconds_sum", "fetch") / 3 < 0.25
    assert sample("ecg_stage_latency_seconds_count", "process") == 1  # per batch
    assert 0 <= sample("ecg_stage_latency_seconds_sum", "process") < 0.2  # decode, score, events
    assert sample("ecg_stage_latency_seconds_count", "publish") == 1
    assert 0.05 <= sample("ecg_stage_latency_seconds_sum", "publish") < 1.0
    assert sample("ecg_end_to_end_latency_seconds_sum") / 3 >= 0.25
