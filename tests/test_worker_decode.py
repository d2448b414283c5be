"""The decoder without a broker: one poll's records → beats in input order, or a reason each."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker.decode import BeatDecoder, DecodedBatch
from ecg_anomaly.worker.json_beats import JsonBeats
from ecg_anomaly.worker.records import Record, Records
from tests.support.poison import POISON, Poison

STAMP = 1_700_000_000_000
BINARY = m.beat_headers(m.BINARY_CONTENT_TYPE)


def rec(
    value: bytes | None, key: bytes | None = b"src", headers: list | None = None, timestamp: int = STAMP
) -> Record:
    return Record("beats", 0, 0, timestamp, key, value, m.beat_headers() if headers is None else headers)


def decode(records: list[Record], max_record_bytes: int = 65536) -> DecodedBatch:
    numbered = [r._replace(offset=i) for i, r in enumerate(records)]
    return BeatDecoder(m.BEAT_LENGTH, max_record_bytes, 1024).decode(Records.of(numbered))


def test_json_and_binary_beats_keep_their_input_order() -> None:
    a = np.linspace(-3, 3, m.BEAT_LENGTH, dtype=np.float32)
    b = a[::-1].copy()
    batch = decode(
        [
            rec(
                m.encode_beat_json(
                    "p1", a, beat_time="2026-01-01T00:00:00+00:00", beat_id="x", label="normal"
                )
            ),
            rec(m.encode_beat_binary(b), key=b"p2", headers=BINARY),
            rec(m.encode_beat_json("p3", b), headers=[]),  # no content-type: JSON
        ]
    )
    assert batch.rejects == []
    assert np.array_equal(batch.beats, np.stack([a, b, b]))
    assert batch.rows == [0, 1, 2] and batch.source_ids == ["p1", "p2", "p3"]
    assert batch.beat_times == [1_767_225_600_000, STAMP, STAMP]  # the record timestamp when absent
    assert batch.beat_ids == ["x", None, None] and batch.labels == ["normal", None, None]


def test_a_poll_of_plain_binary_beats_takes_the_column_path_and_agrees_with_the_other() -> None:
    rng = np.random.default_rng(3)
    beats = rng.normal(size=(5, m.BEAT_LENGTH)).astype(np.float32)
    plain = [rec(m.encode_beat_binary(v), key=f"s{i}".encode(), headers=BINARY) for i, v in enumerate(beats)]
    fast = decode(plain)
    slow = decode([*plain, rec(b"not json")])  # one other record: the record-by-record path
    assert np.array_equal(fast.beats, beats) and np.array_equal(slow.beats, beats)
    for name in ("rows", "source_ids", "beat_times", "beat_ids", "labels"):
        assert getattr(fast, name) == getattr(slow, name), name
    assert [r.reason.value for r in slow.rejects] == ["invalid_json"]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (rec(b"x" * 2000), "oversized"),
        (rec(b"{}", headers=[("content-type", b"application/avro")]), "unknown_content_type"),
        (rec(b"\0" * 560, key=b"\xff", headers=BINARY), "undecodable_bytes"),
        # a record timestamp that stands in for an absent beat_time is held to the same range
        (rec(b"\0" * 560, headers=BINARY, timestamp=10**17), "wrong_type"),
        (rec(m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH), timestamp=m.MAX_BEAT_TIME_MS + 1), "wrong_type"),
        (
            rec(m.encode_beat_binary(np.zeros(m.BEAT_LENGTH)), key=b"k" * 1025, headers=BINARY),
            "oversized_key",
        ),
    ],
)
def test_record_level_reasons(record: Record, reason: str) -> None:
    good = rec(m.encode_beat_json("p", [1.0] * m.BEAT_LENGTH))
    batch = decode([good, record], max_record_bytes=1500 if reason == "oversized" else 65536)
    assert [r.reason.value for r in batch.rejects] == [reason]
    assert batch.rows == [0]


@pytest.mark.parametrize("poison", POISON, ids=[p.name for p in POISON])
def test_every_poison_kind_gets_its_reason(poison: Poison) -> None:
    good = rec(m.encode_beat_json("p", [1.0] * m.BEAT_LENGTH))
    stamp = STAMP if poison.stamp is None else poison.stamp(int(time.time() * 1000))
    batch = decode([good, rec(poison.value, key=poison.key, headers=poison.headers, timestamp=stamp)])
    assert [r.reason.value for r in batch.rejects] == [poison.reason]
    assert batch.rejects[0].record.offset == 1 and batch.rows == [0]


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
    fast = JsonBeats(m.BEAT_LENGTH, 1024).fast
    assert [fast(v) is not None for v in shapes] == [True, False, True, False, True, True, True]
    batch = decode([rec(v) for v in shapes])
    assert batch.rejects == []
    for row, raw in enumerate(shapes):
        expected = orjson.loads(raw)
        assert np.array_equal(batch.beats[row], np.array(expected["values"], dtype=np.float32))
        assert (batch.source_ids[row], batch.beat_ids[row], batch.labels[row]) == (
            expected["source_id"],
            expected.get("beat_id"),
            expected.get("label"),
        )
    assert batch.beat_times[0] == 5 and batch.beat_times[2] == 1_767_225_600_000 and batch.beat_times[4] == 7


def test_non_finite_beats_are_rejected_in_input_order_among_the_others() -> None:
    nan = np.zeros(m.BEAT_LENGTH, dtype=np.float32)
    nan[3] = np.nan
    records = [
        rec(b"bad json"),
        rec(m.encode_beat_binary(nan), headers=BINARY),
        rec(m.encode_beat_json("p", [1.0] * m.BEAT_LENGTH)),
        rec(b'{"source_id": "s", "values": [1e39' + b", 0" * (m.BEAT_LENGTH - 1) + b"]}"),
    ]
    batch = decode(records)
    assert [(r.record.offset, r.reason.value) for r in batch.rejects] == [
        (0, "invalid_json"),
        (1, "non_finite"),
        (3, "non_finite"),
    ]
    assert batch.rows == [2] and batch.beats.shape == (1, m.BEAT_LENGTH)


def test_a_polls_offsets_per_partition_are_its_first_and_one_after_its_last() -> None:
    """What a rewind goes back to and what a commit records, with partitions and topics interleaved
    one record at a time and in runs (as fetches hand them over)."""
    coordinates = [("a", 0, 5), ("a", 1, 9), ("b", 0, 2), ("a", 0, 6), ("a", 1, 10), ("a", 0, 7), ("b", 0, 3)]
    coordinates += [("a", 1, 11), ("a", 1, 12), ("a", 1, 13), ("a", 0, 8), ("a", 0, 9)]
    coordinates += [("b", 1, 0), ("b", 0, 4)]
    records = Records.of([Record(t, p, o, STAMP, b"k", b"v", None) for t, p, o in coordinates])
    first, after = records.offsets()
    assert first == {("a", 0): 5, ("a", 1): 9, ("b", 0): 2, ("b", 1): 0}
    assert after == {("a", 0): 10, ("a", 1): 14, ("b", 0): 5, ("b", 1): 1}
    assert Records.of([]).offsets() == ({}, {})
