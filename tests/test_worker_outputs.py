"""A scored batch's outputs without a broker: events, score records and dead letters, field by field."""

from __future__ import annotations

import uuid

import jsonschema
import numpy as np
import orjson
import pytest

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker import columns as C
from ecg_anomaly.worker.model import Scores
from ecg_anomaly.worker.outputs import OutputBuilder
from ecg_anomaly.worker.topic_limits import OutputLimits
from tests.test_worker_decode import BINARY, decode, rec

DEFAULT_LIMITS = OutputLimits([], lambda topics, timeout: {})  # Kafka's defaults for every topic


def _builder(scores_topic: str = "scores") -> OutputBuilder:
    return OutputBuilder("anomalies", scores_topic, "dlq", "group-1", "worker-1", DEFAULT_LIMITS)


def _by_topic(records: list) -> dict[str, list]:
    by_topic: dict[str, list] = {}
    for r in records:
        by_topic.setdefault(r.topic, []).append(r)
    return by_topic


def test_outputs_locate_the_error_and_copy_dead_letters_untouched() -> None:
    beats = [rec(m.encode_beat_json(f"p{i}", [0.0] * m.BEAT_LENGTH, beat_id=f"b{i}")) for i in range(3)]
    bad = rec(b"nope", headers=[("trace", b"1")])
    batch = decode([*beats, bad])
    sample_error = np.full((3, m.BEAT_LENGTH), 0.001, dtype=np.float32)
    sample_error[1, 42] = 1.0  # beat 1 deviates at sample 42
    scores = Scores(np.array([0.01, 0.5, 0.02], dtype=np.float32), sample_error)
    out = _builder().build(batch, scores, 0.1, "v1")
    assert out.anomaly.tolist() == [False, True, False]
    by_topic = _by_topic(out.records)
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


def _reference_event(batch, scores: Scores, beat: int, threshold: float, version: str) -> dict:
    """The anomaly event of one beat, from its definition (schemas/anomaly_event.schema.json)."""
    errors = scores.sample_error[beat].astype(np.float64)
    windows = [errors[s : s + 10].sum() for s in range(0, len(errors), 10)]
    best = int(np.argmax(windows))
    peak = int(np.argmax(errors))
    row = batch.rows[beat]
    r = batch.records
    event = {
        "event_id": str(
            uuid.uuid5(m.EVENT_ID_NAMESPACE, f"{r.topic[row]}/{r.partition[row]}/{r.offset[row]}")
        ),
        "source_id": batch.source_ids[beat],
        "beat_time": m.iso_time(batch.beat_times[beat]),
        "score": float(scores.score[beat]),
        "ratio": float(scores.score[beat]) / threshold,
        "severity": m.severity(float(scores.score[beat]), threshold),
        "threshold": threshold,
        "model_version": version,
        "input": {
            "topic": r.topic[row],
            "partition": r.partition[row],
            "offset": r.offset[row],
            "timestamp": r.timestamp[row],
        },
        "error_location": {
            "window_start": best * 10,
            "window_end": best * 10 + 10,
            "window_share": windows[best] / errors.sum(),
            "peak_sample": peak,
            "peak_error": errors[peak],
        },
    }
    for name in ("beat_id", "label"):
        value = getattr(batch, name + "s")[beat]
        if value is not None:
            event[name] = value
    return event


def _assert_close(got: object, want: object) -> None:
    """Equal, numbers within 1e-12 relative (the reference sums windows in another order)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (got, want)
        for key in want:
            _assert_close(got[key], want[key])
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-12)
    else:
        assert got == want


def test_every_event_and_score_record_matches_its_definition() -> None:
    rng = np.random.default_rng(8)
    records = []
    for i in range(200):
        values = rng.normal(size=m.BEAT_LENGTH)
        if i % 3 == 0:
            records.append(rec(m.encode_beat_binary(values), key=f"dev-{i}".encode(), headers=BINARY))
        else:
            label = ("normal", "anomaly", None)[i % 3]
            name = f'p"{i}\n\\ é'  # quotes, a newline, a backslash and non-ASCII in the source id
            beat_id = None if i % 4 == 0 else f"b{i}"
            records.append(
                rec(m.encode_beat_json(name, values, beat_time=i * 1001, beat_id=beat_id, label=label))
            )
    batch = decode(records)
    scores = Scores(
        (rng.random(200) * 0.2).astype(np.float32),
        (rng.random((200, m.BEAT_LENGTH)) * 0.1).astype(np.float32),
    )
    out = _builder().build(batch, scores, 0.1, "v1")
    by_topic = _by_topic(out.records)
    flagged = np.flatnonzero(scores.score > np.float32(0.1)).tolist()
    assert 0 < len(flagged) < 200 and out.anomaly.nonzero()[0].tolist() == flagged
    for record, beat in zip(by_topic["anomalies"], flagged, strict=True):
        event = orjson.loads(record.value)
        detected = event.pop("detected_at")
        _assert_close(event, _reference_event(batch, scores, beat, 0.1, "v1"))
        assert record.key == batch.source_ids[beat].encode() and detected.endswith("Z")
        m.validate_event({**event, "detected_at": detected})
    for record, beat in zip(by_topic["scores"], range(200), strict=True):
        score = orjson.loads(record.value)
        jsonschema.validate(score, m.score_schema(), format_checker=jsonschema.FormatChecker())
        assert score["score"] == float(scores.score[beat]) and score["anomaly"] == (beat in flagged)
        assert score["event_id"] == m.event_id("beats", 0, batch.rows[beat])


def test_beat_times_at_both_ends_of_the_range_make_valid_events() -> None:
    """Epoch 0 and 9999-12-31T23:59:59.999Z are accepted and written as four-digit-year ISO times."""
    beats = [
        rec(m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH, beat_time=0)),
        rec(m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH, beat_time=m.MAX_BEAT_TIME_MS)),
        rec(m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH, beat_time="9999-12-31T18:59:59.999-05:00")),
    ]
    batch = decode(beats)
    assert not batch.rejects
    scores = Scores(np.ones(3, dtype=np.float32), np.ones((3, m.BEAT_LENGTH), dtype=np.float32))
    out = _builder("").build(batch, scores, 0.5, "v1")
    events = [orjson.loads(r.value) for r in out.records]
    for event in events:
        m.validate_event(event)
    assert [e["beat_time"] for e in events] == [
        "1970-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59.999Z",
    ]


def test_a_beat_whose_score_is_not_finite_is_dead_lettered() -> None:
    """NaN compares as normal and an infinite score is no JSON number: neither may pass as a score."""
    batch = decode([rec(m.encode_beat_json(f"p{i}", [0.0] * m.BEAT_LENGTH)) for i in range(3)])
    score = np.array([np.inf, 0.9, np.nan], dtype=np.float32)
    out = _builder().build(batch, Scores(score, np.ones((3, m.BEAT_LENGTH), np.float32)), 0.5, "v1")
    assert [(r.record.offset, r.reason.value) for r in out.batch.rejects] == [
        (0, "non_finite"),
        (2, "non_finite"),
    ]
    assert out.batch.rows == [1] and out.anomaly.tolist() == [True]
    by_topic = _by_topic(out.records)
    assert len(by_topic["anomalies"]) == len(by_topic["scores"]) == 1 and len(by_topic["dlq"]) == 2
    assert "score is not finite" in dict(by_topic["dlq"][0].headers)[m.DLQ_MESSAGE].decode()


@pytest.mark.parametrize("count", [3, C.VECTOR_FROM, 2000])  # one by one, and the numpy way
@pytest.mark.parametrize("topics", [("ecg.beats",), ("ecg.beats", "bëats/ünicode")])
def test_document_heads_carry_the_event_id_and_the_beat_time(count: int, topics: tuple[str, ...]) -> None:
    """Both ways of writing a document's opening give the contract's event id and ISO beat time, over
    every variant digit and the whole accepted time range, for batches of one topic and of several."""
    rng = np.random.default_rng(count)
    inputs = [(topics[i % len(topics)], i % 7, int(o)) for i, o in enumerate(rng.integers(0, 2**40, count))]
    stamps = [0, m.MAX_BEAT_TIME_MS, *rng.integers(0, m.MAX_BEAT_TIME_MS, count - 2).tolist()]
    stamps[count // 2 :] = [1_764_000_000_000 + 7 * i for i in range(count - count // 2)]  # a few seconds
    heads = C.heads(*zip(*inputs, strict=True), stamps)
    for head, (topic, partition, offset), ms in zip(heads, inputs, stamps, strict=True):
        assert orjson.loads(head + b"}") == {
            "event_id": str(uuid.uuid5(m.EVENT_ID_NAMESPACE, f"{topic}/{partition}/{offset}")),
            "beat_time": m.iso_time(ms),
        }
