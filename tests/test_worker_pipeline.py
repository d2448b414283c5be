"""The worker against a real broker: parity with offline scoring, dead letters, metrics, SIGTERM drain."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np
import onnxruntime as ort
import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.schemas.artifact import decode_metadata
from tests.support.artifact import build_small_artifact, load_test_split
from tests.support.worker import WorkerProcess, produce_beats, produce_raw, read_topic, wait_for

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_artifact(tmp_path_factory.mktemp("model"))


def _offline(model: Path, beats: np.ndarray) -> tuple[np.ndarray, float]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    threshold = decode_metadata(session.get_modelmeta().custom_metadata_map).threshold
    (score,) = session.run(["score"], {"beats": beats.astype(np.float32)})
    return score, threshold


def _topic_of(worker: WorkerProcess, option: str) -> str:
    return worker.args[worker.args.index("--" + option.replace("_", "-")) + 1]


def test_scores_match_offline_and_events_are_exactly_the_anomalies(
    kafka_bootstrap: str, model_path: Path, worker_factory
) -> None:
    beats, labels = load_test_split()
    beats, labels = beats[:1000], labels[:1000]
    expected, threshold = _offline(model_path, beats)
    worker = worker_factory(model_path)
    worker.wait_ready()
    topic = _topic_of(worker, "input_topic")
    produce_beats(kafka_bootstrap, topic, beats, labels=labels)  # JSON
    produce_beats(kafka_bootstrap, topic, beats, binary=True)  # the same beats, binary
    wait_for(lambda: worker.metrics()["ecg_beats_consumed_total"] >= 2000, 180, "2,000 beats consumed")

    scores = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, _topic_of(worker, "scores_topic"))]
    events = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, _topic_of(worker, "anomaly_topic"))]
    assert len(scores) == 2000
    for score in scores:
        jsonschema.validate(score, m.score_schema(), format_checker=jsonschema.FormatChecker())

    # beat_id b<i> (JSON) or, for binary beats, the order per source key gives back the index
    by_index: dict[tuple[str, int], float] = {}
    binary_seen: Counter[str] = Counter()
    for s in sorted(scores, key=lambda s: (s["input"]["partition"], s["input"]["offset"])):
        if "beat_id" in s:
            by_index[("json", int(s["beat_id"][1:]))] = s["score"]
        else:
            source = int(s["source_id"].split("-")[1])
            by_index[("binary", source + 7 * binary_seen[s["source_id"]])] = s["score"]
            binary_seen[s["source_id"]] += 1
    for kind in ("json", "binary"):
        got = np.array([by_index[(kind, i)] for i in range(1000)])
        assert np.max(np.abs(got - expected)) <= 1e-6, kind

    over = int((expected > np.float32(threshold)).sum())
    assert 0 < over < 1000
    assert len(events) == 2 * over
    json_events = {int(e["beat_id"][1:]) for e in events if "beat_id" in e}
    assert json_events == set(np.flatnonzero(expected > np.float32(threshold)).tolist())
    score_ids = {s["event_id"] for s in scores if s["anomaly"]}
    for event in events:
        m.validate_event(event)
        assert event["event_id"] == m.event_id(
            event["input"]["topic"], event["input"]["partition"], event["input"]["offset"]
        )
        assert event["event_id"] in score_ids
        assert event["score"] > event["threshold"] == pytest.approx(threshold)
        assert event["severity"] == m.severity(event["score"], event["threshold"])
        loc = event["error_location"]
        assert loc["window_end"] - loc["window_start"] == 10
        assert 0 < loc["window_share"] <= 1 and 0 <= loc["peak_sample"] < m.BEAT_LENGTH

    # /metrics: the counters equal what was sent; histograms saw every beat
    metrics = worker.metrics()
    assert metrics["ecg_beats_consumed_total"] == 2000
    assert metrics['ecg_beats_scored_total{outcome="anomaly"}'] == 2 * over
    assert metrics['ecg_beats_scored_total{outcome="normal"}'] == 2000 - 2 * over
    assert sum(v for k, v in metrics.items() if k.startswith("ecg_dead_letters_total")) == 0
    assert metrics["ecg_reconstruction_error_count"] == 2000
    assert metrics["ecg_reconstruction_error_sum"] == pytest.approx(2 * float(expected.sum()), rel=1e-5)
    assert metrics["ecg_end_to_end_latency_seconds_count"] == 2000
    assert metrics["ecg_batch_size_sum"] == 2000
    assert metrics["ecg_inference_duration_seconds_count"] >= 1
    assert metrics["ecg_model_threshold"] == pytest.approx(threshold)
    assert [k for k, v in metrics.items() if k.startswith("ecg_model_info{") and v == 1] != []
    predicted = expected > np.float32(threshold)
    for label, truth in (("anomaly", 1), ("normal", 0)):
        for outcome, flag in (("anomaly", True), ("normal", False)):
            want = int(((labels == truth) & (predicted == flag)).sum())
            assert metrics[f'ecg_labelled_beats_total{{label="{label}",outcome="{outcome}"}}'] == want
    assert all(f'ecg_consumer_lag{{partition="{p}"}}' in metrics for p in range(3))


def _bad_records(good: bytes) -> list[tuple[str, bytes | None, bytes | None, list]]:
    """(expected reason, key, value, headers): one real malformed record per dead-letter reason."""
    json_h = m.beat_headers(m.JSON_CONTENT_TYPE)
    bin_h = m.beat_headers(m.BINARY_CONTENT_TYPE)
    values = [0.1] * m.BEAT_LENGTH
    nan_beat = np.zeros(m.BEAT_LENGTH, dtype="<f4")
    nan_beat[3] = np.nan
    return [
        ("empty_value", b"s1", None, json_h),
        ("oversized", b"s1", b" " * 9000 + good, json_h),
        ("unknown_content_type", b"s1", good, [("content-type", b"text/csv")]),
        ("undecodable_bytes", b"s1", b'{"source_id": "\xff\xfe"}', json_h),
        ("invalid_json", b"s1", b'{"source_id": "s1", "values": [1, 2', json_h),
        ("missing_field", b"s1", orjson.dumps({"values": values}), json_h),
        ("wrong_type", b"s1", orjson.dumps({"source_id": "s1", "values": ["1"] * m.BEAT_LENGTH}), json_h),
        ("wrong_length", b"s1", orjson.dumps({"source_id": "s1", "values": values[:-1]}), json_h),
        ("wrong_length", b"s1", b"\0" * (4 * m.BEAT_LENGTH - 4), bin_h),
        ("non_finite", b"s1", b'{"source_id": "s1", "values": [1e39' + b", 0" * 139 + b"]}", json_h),
        ("non_finite", b"s1", nan_beat.tobytes(), bin_h),
        ("missing_key", None, np.zeros(m.BEAT_LENGTH, dtype="<f4").tobytes(), bin_h),
    ]


def test_every_dead_letter_reason_lands_with_its_record_untouched(
    kafka_bootstrap: str, model_path: Path, worker_factory
) -> None:
    beats, _ = load_test_split()
    worker = worker_factory(model_path, partitions=1, max_record_bytes=8192)
    worker.wait_ready()
    topic = _topic_of(worker, "input_topic")
    good = m.encode_beat_json("s1", beats[0])
    bad = _bad_records(good)
    records: list[tuple[bytes | None, bytes | None, list]] = []
    for i, (_, key, value, headers) in enumerate(bad):
        records.append((b"s1", m.encode_beat_json("s1", beats[i], beat_id=f"g{i}"), m.beat_headers()))
        records.append((key, value, [*headers, ("trace-id", f"t{i}".encode())]))
    records.append((b"s1", m.encode_beat_json("s1", beats[99], beat_id="last"), m.beat_headers()))
    produce_raw(kafka_bootstrap, topic, records)
    total = len(records)
    wait_for(lambda: worker.metrics()["ecg_beats_consumed_total"] >= total, 180, "all records consumed")

    inputs = read_topic(kafka_bootstrap, topic)
    dead = read_topic(kafka_bootstrap, _topic_of(worker, "dlq_topic"))
    scored = read_topic(kafka_bootstrap, _topic_of(worker, "scores_topic"))
    assert len(dead) == len(bad)
    assert len(scored) == total - len(bad)
    assert len(scored) + len(dead) == len(inputs) == total
    by_offset = {r.offset: r for r in inputs}
    for record in dead:
        h = dict(record.headers)
        reason, key, value, _ = bad[int(h["trace-id"][1:])]
        assert h[m.DLQ_REASON].decode() == reason, h[m.DLQ_MESSAGE]
        assert h[m.DLQ_MESSAGE]
        original = by_offset[int(h[m.DLQ_OFFSET])]
        assert (h[m.DLQ_TOPIC].decode(), int(h[m.DLQ_PARTITION])) == (topic, 0)
        assert h[m.DLQ_CONSUMER_GROUP].decode() == _topic_of(worker, "group_id")
        assert (record.key, record.value, record.timestamp) == (key, value, original.timestamp)
        assert record.headers[: len(original.headers)] == original.headers
    assert {s.value and orjson.loads(s.value)["beat_id"] for s in scored} == {
        f"g{i}" for i in range(len(bad))
    } | {"last"}

    metrics = worker.metrics()
    reasons = Counter(reason for reason, *_ in bad)
    for reason in m.DEAD_LETTER_REASONS:
        assert metrics[f'ecg_dead_letters_total{{reason="{reason}"}}'] == reasons.get(reason, 0), reason
    scored_total = sum(metrics[f'ecg_beats_scored_total{{outcome="{o}"}}'] for o in ("normal", "anomaly"))
    dead_total = sum(v for k, v in metrics.items() if k.startswith("ecg_dead_letters_total{"))
    assert metrics["ecg_beats_consumed_total"] == scored_total + dead_total == total


def test_sigterm_under_load_drains_and_loses_nothing(
    kafka_bootstrap: str, model_path: Path, worker_factory
) -> None:
    beats, _ = load_test_split()
    stream = np.tile(beats, (8, 1))  # 8,000 beats
    worker = worker_factory(model_path, drain_timeout=10, max_batch=256)
    worker.wait_ready()
    topic = _topic_of(worker, "input_topic")
    feeder = threading.Thread(
        target=produce_beats, args=(kafka_bootstrap, topic, stream), kwargs={"rate": 3000}
    )
    feeder.start()
    wait_for(lambda: worker.metrics()["ecg_beats_consumed_total"] >= 1500, 180, "the worker to be busy")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.log()
    lines = [orjson.loads(line) for line in worker.log_path.read_text().splitlines()]  # JSON logs only
    assert [line["message"] for line in lines][-1] == "worker stopped cleanly"
    assert len(lines) < 100  # events of note, not one line per beat

    options = {k: _topic_of(worker, k) for k in ("anomaly_topic", "scores_topic", "dlq_topic")}
    successor = WorkerProcess(
        kafka_bootstrap,
        model_path,
        topic,
        _topic_of(worker, "group_id"),
        worker.log_path.with_suffix(".2"),
        **options,
    ).start()
    try:
        feeder.join()
        successor.wait_ready()
        scores_topic = options["scores_topic"]
        wait_for(
            lambda: len(_scored_offsets(kafka_bootstrap, scores_topic)) >= len(stream),
            120,
            "every beat scored",
            interval=1.0,
        )
    finally:
        successor.stop()
    inputs = read_topic(kafka_bootstrap, topic)
    assert len(inputs) == len(stream)
    assert _scored_offsets(kafka_bootstrap, scores_topic) == {(r.partition, r.offset) for r in inputs}


def _scored_offsets(bootstrap: str, scores_topic: str) -> set[tuple[int, int]]:
    inputs = (orjson.loads(r.value)["input"] for r in read_topic(bootstrap, scores_topic, idle=1.0))
    return {(i["partition"], i["offset"]) for i in inputs}


def test_failed_dead_letter_write_is_never_committed(
    kafka_bootstrap: str, model_path: Path, worker_factory
) -> None:
    """The dead-letter topic name is invalid, so every DLQ write fails: the offset must stay uncommitted."""
    worker = worker_factory(model_path, partitions=1, dlq_topic="not a valid topic!", kafka_timeout=2)
    worker.wait_ready()
    topic = _topic_of(worker, "input_topic")
    produce_raw(kafka_bootstrap, topic, [(b"s1", b"not json", m.beat_headers())])
    assert worker.wait(timeout=180) == 1, worker.log()  # gives up after repeated failures: pod restarts
    assert "could not be published" in worker.log()
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=_topic_of(worker, "group_id"), enable_auto_commit=False
    )
    try:
        assert consumer.committed(TopicPartition(topic, 0), timeout_ms=10000) is None
    finally:
        consumer.close(autocommit=False, timeout_ms=2000)
