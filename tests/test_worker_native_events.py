"""The anomaly events written in C (``worker._events``) against a plain-Python reference of the contract."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker._events import anomaly_events
from ecg_anomaly.worker.decode import BeatMeta
from ecg_anomaly.worker.events import OutputBuilder, OutRecord
from ecg_anomaly.worker.kafka_io import Record
from ecg_anomaly.worker.model import Scores
from ecg_anomaly.worker.topic_limits import OutputLimits

DEFAULT_LIMITS = OutputLimits([], lambda topics, timeout: {})  # Kafka's defaults for every topic


def _reference(meta: BeatMeta, column: dict[str, Any], threshold: float, version: str) -> dict:
    """One event as the contract describes it, written the obvious way (a dict, ``uuid.uuid5``)."""
    record = meta.record
    event: dict[str, Any] = {
        "event_id": str(
            uuid.uuid5(m.EVENT_ID_NAMESPACE, f"{record.topic}/{record.partition}/{record.offset}")
        ),
        "source_id": meta.source_id,
        "beat_time": m.iso_time(meta.beat_time_ms),
        "score": column["score"],
        "threshold": threshold,
        "ratio": column["ratio"],
        "severity": m.severity(column["score"], threshold),
        "model_version": version,
        "input": {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": record.timestamp,
        },
        "error_location": {
            "window_start": column["window_start"],
            "window_end": column["window_end"],
            "window_share": column["share"],
            "peak_sample": column["peak"],
            "peak_error": column["peak_error"],
        },
    }
    if meta.beat_id is not None:
        event["beat_id"] = meta.beat_id
    if meta.label is not None:
        event["label"] = meta.label
    return event


_AWKWARD = ['"', "\\", "\n", "\t", "\x00", "\x1f", "\x7f", "é", "心", "😀", "/", "\u2028", " ", "a"]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_AWKWARD) for _ in range(rng.randint(0, 12)))


def _meta(rng: random.Random, i: int) -> BeatMeta:
    record = Record(
        rng.choice(["beats", "ecg.beats", "topic-" + _text(rng)]),
        rng.randint(0, 2**31 - 1) if i % 3 == 0 else rng.randint(0, 5),
        rng.randint(0, 2**63 - 1) if i % 4 == 0 else rng.randint(0, 10**6),
        rng.choice([-1, 0, rng.randint(0, m.MAX_BEAT_TIME_MS)]),
        None,
        None,
        None,
    )
    beat_time = rng.choice([0, m.MAX_BEAT_TIME_MS, rng.randint(0, m.MAX_BEAT_TIME_MS), 1_767_225_600_123])
    return BeatMeta(
        record,
        _text(rng) or "device-1",
        beat_time,
        rng.choice([None, _text(rng), "b1"]),
        rng.choice([None, *m.LABELS]),
    )


HEADERS = [("content-type", b"application/json")]


def _json(column: np.ndarray) -> bytes:
    return orjson.dumps(column, option=orjson.OPT_SERIALIZE_NUMPY)


COLUMNS = ("score", "ratio", "share", "peak_error", "window_start", "window_end", "peak")


@pytest.mark.parametrize("seed", range(6))
def test_events_written_in_c_equal_the_reference(seed: int) -> None:
    """Awkward strings, times at both ends of the range, the largest offsets, tiny and huge floats."""
    rng = random.Random(seed)
    n = rng.choice([1, 3, 64, 300])
    meta = [_meta(rng, i) for i in range(n)]
    threshold = rng.choice([1e-40, 0.05, 0.1, 3.0])
    floats = [rng.choice([0.0, 1e-300, 1e-5, rng.random(), rng.random() * 1e30]) for _ in range(4 * n)]
    score, share, peak_error = (
        np.array(floats[:n]),
        np.array(floats[n : 2 * n]),
        np.array(floats[2 * n : 3 * n]),
    )
    ints = np.array([rng.randrange(m.BEAT_LENGTH) for _ in range(3 * n)], dtype=np.int64).reshape(3, n)
    columns = {
        "score": score,
        "ratio": score / threshold,
        "share": share,
        "peak_error": peak_error,
        "window_start": ints[0],
        "window_end": ints[1],
        "peak": ints[2],
    }
    version = "v1-" + _text(rng)
    shared = b',"detected_at":"2026-11-30T00:00:00.000Z","threshold":%s,"model_version":%s' % (
        orjson.dumps(threshold),
        orjson.dumps(version),
    )
    docs = anomaly_events(
        meta,
        *(_json(columns[c]) for c in COLUMNS[:4]),
        *(columns[c] for c in COLUMNS[4:]),
        m.severities(columns["ratio"]),
        shared,
        m.EVENT_ID_NAMESPACE.bytes,
        OutRecord,
        "anomalies",
        HEADERS,
    )
    assert len(docs) == n
    for i, out in enumerate(docs):
        assert out == OutRecord("anomalies", meta[i].source_id.encode(), out.value, HEADERS, None)
        event = orjson.loads(out.value)
        assert event.pop("detected_at") == "2026-11-30T00:00:00.000Z"
        column = {c: columns[c][i].item() for c in COLUMNS}
        assert event == _reference(meta[i], column, threshold, version)


def test_the_builder_writes_valid_events_for_the_flagged_beats() -> None:
    rng = random.Random(7)
    meta = [_meta(rng, i) for i in range(200)]
    errors = np.random.default_rng(7).random((200, m.BEAT_LENGTH), dtype=np.float32) ** 4
    errors[0] = 0.0  # no error anywhere: window share 0, the first window and sample
    score = np.random.default_rng(8).random(200, dtype=np.float32) * 0.2
    started = m.iso_time(int(time.time() * 1000))
    out = OutputBuilder("anomalies", "", "dlq", "g", "w", DEFAULT_LIMITS).build(
        meta, Scores(score, errors), 0.1, "v1", []
    )
    flagged = np.flatnonzero(score > np.float32(0.1)).tolist()
    assert out.anomaly.nonzero()[0].tolist() == flagged and 0 < len(flagged) < 200
    assert len(out.records) == len(flagged)
    for i, record in zip(flagged, out.records, strict=True):
        event = orjson.loads(record.value)
        m.validate_event(event)
        assert started <= event["detected_at"] <= m.iso_time(int(time.time() * 1000))
        assert event["score"] == float(score[i]) and event["ratio"] == float(score[i]) / 0.1
        assert event["error_location"]["peak_sample"] == int(errors[i].argmax())
        assert record.key == meta[i].source_id.encode() and record.topic == "anomalies"


def test_non_finite_scores_are_written_as_null() -> None:
    """As orjson writes them: the document stays valid JSON whatever the model returned."""
    meta = [BeatMeta(Record("t", 0, i, 0, None, None, None), "s", 0) for i in range(2)]
    errors = np.ones((2, m.BEAT_LENGTH), dtype=np.float32)
    errors[1, 3] = np.inf
    out = OutputBuilder("a", "", "d", "g", "w", DEFAULT_LIMITS).build(
        meta, Scores(np.full(2, np.inf, np.float32), errors), 0.1, "v", []
    )
    events = [orjson.loads(r.value) for r in out.records]
    assert [e["score"] for e in events] == [None, None] and events[1]["error_location"]["peak_error"] is None


def test_bad_arguments_raise_instead_of_writing_garbage() -> None:
    meta = [BeatMeta(Record("t", 0, 0, 0, None, None, None), "s", 0)]
    f, i = b"[0.5]", np.zeros(1, dtype=np.int64)
    ok = (meta, f, f, f, f, i, i, i, ["low"], b"", bytes(16), OutRecord, "a", HEADERS)
    assert len(anomaly_events(*ok)) == 1
    for wrong in (b"[0.5,0.5]", b"[]", b"0.5", b""):
        with pytest.raises(ValueError, match="score must be a JSON array of 1 numbers"):
            anomaly_events(meta, wrong, *ok[2:])
    with pytest.raises(ValueError, match="window_start must be 1 int64"):
        anomaly_events(*ok[:5], np.zeros(1), *ok[6:])
    with pytest.raises(ValueError, match="peak must be 1 int64"):
        anomaly_events(*ok[:7], np.zeros(2, dtype=np.int64), *ok[8:])
    with pytest.raises(ValueError, match="severities"):
        anomaly_events(*ok[:8], [], *ok[9:])
    with pytest.raises(ValueError, match="namespace"):
        anomaly_events(*ok[:10], b"short", *ok[11:])
    with pytest.raises(TypeError, match="record_type must be a named tuple of 5"):
        anomaly_events(*ok[:11], tuple, *ok[12:])
    with pytest.raises(TypeError, match="source_id must be a str"):
        anomaly_events([BeatMeta(meta[0].record, b"bytes", 0)], *ok[1:])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside"):
        anomaly_events([BeatMeta(meta[0].record, "s", m.MAX_BEAT_TIME_MS + 1)], *ok[1:])


@dataclass
class _Counted:
    """A beat whose attributes are fresh objects on every read: leaks show as a growing count."""

    record: Record
    source_id: str
    beat_time_ms: int
    beat_id: str | None = "b"
    label: str | None = "anomaly"


def test_writing_events_keeps_no_references() -> None:
    import sys

    topic, source = "topic-" + "x" * 20, "source-" + "y" * 20
    meta = [_Counted(Record(topic, 1, 2, 3, None, None, None), source, 4) for _ in range(50)]
    f, i = _json(np.full(50, 0.5)), np.arange(50, dtype=np.int64)
    headers = [("content-type", b"x")]

    def counts() -> tuple[int, ...]:
        return tuple(sys.getrefcount(x) for x in (topic, source, meta[0], headers, OutRecord))

    before = counts()
    for _ in range(200):
        anomaly_events(meta, f, f, f, f, i, i, i, ["low"] * 50, b',"x":1', bytes(16), OutRecord, "a", headers)
    with pytest.raises(ValueError, match="outside"):  # a failure half-way through the batch
        anomaly_events(
            [*meta, BeatMeta(meta[0].record, "s", -1)],
            *(_json(np.full(51, 0.5)),) * 4,
            *(np.arange(51, dtype=np.int64),) * 3,
            ["low"] * 51,
            b"",
            bytes(16),
            OutRecord,
            "a",
            headers,
        )
    assert counts() == before


def test_the_beats_stay_alive_whatever_their_attributes_run() -> None:
    """A beat whose attribute lookup empties the lists the events are written from."""
    beats: list[Any] = []
    severities: list[str] = []

    class Beat:
        record = Record("t", 0, 0, 0, None, None, None)
        beat_time_ms = 0
        beat_id = None
        label = None

        @property
        def source_id(self) -> str:
            beats.clear()
            severities.clear()
            return "s"

    beats[:] = [Beat() for _ in range(4)]
    severities[:] = ["".join(["lo", "w"]) for _ in range(4)]  # fresh strings, not interned
    f, i = _json(np.full(4, 0.5)), np.zeros(4, dtype=np.int64)
    out = anomaly_events(beats, f, f, f, f, i, i, i, severities, b"", bytes(16), OutRecord, "a", HEADERS)
    assert [orjson.loads(o.value)["severity"] for o in out] == ["low"] * 4


def test_misaligned_int_columns_are_refused() -> None:
    meta = [BeatMeta(Record("t", 0, 0, 0, None, None, None), "s", 0)]
    f, i = b"[0.5]", np.zeros(1, dtype=np.int64)
    misaligned = np.zeros(9, dtype=np.uint8)[1:].view(np.int64)
    with pytest.raises(ValueError, match="window_start must be 1 int64"):
        anomaly_events(meta, f, f, f, f, misaligned, i, i, ["low"], b"", bytes(16), OutRecord, "a", HEADERS)
