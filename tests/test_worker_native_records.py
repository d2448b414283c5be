"""Records taken from messages and plain binary batches read in C (``worker._records``)."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker._records import binary_beats, take
from ecg_anomaly.worker.decode import BeatDecoder, BeatMeta
from ecg_anomaly.worker.kafka_io import Record, take_records


class _Message:
    """What the loop reads of a confluent-kafka message: its methods."""

    def __init__(self, offset: int, error: Any = None, timestamp: Any = (1, 1_700_000_000_000)) -> None:
        self._offset, self._error, self._timestamp = offset, error, timestamp
        self._headers = [("content-type", b"x")]

    def error(self) -> Any:
        return self._error

    def topic(self) -> str:
        return "beats"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> Any:
        return self._timestamp

    def key(self) -> bytes:
        return b"k%d" % self._offset

    def value(self) -> bytes:
        return b"v%d" % self._offset

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


def test_take_keeps_the_records_and_sets_aside_the_messages_with_an_error() -> None:
    messages = [_Message(0), _Message(1, error="gone"), _Message(2)]
    records, failed = take_records(messages)  # type: ignore[arg-type]
    assert records == [
        Record("beats", 3, 0, 1_700_000_000_000, b"k0", b"v0", [("content-type", b"x")]),
        Record("beats", 3, 2, 1_700_000_000_000, b"k2", b"v2", [("content-type", b"x")]),
    ]
    assert type(records[0]) is Record and records[0].offset == 0 and failed == [messages[1]]
    assert take([], Record) == ([], [])


def test_take_raises_on_what_is_not_a_message() -> None:
    with pytest.raises(TypeError, match=r"\(type, ms\) pair"):
        take([_Message(0, timestamp=5)], Record)
    with pytest.raises(AttributeError):
        take([object()], Record)
    with pytest.raises(TypeError, match="named tuple of 7"):
        take([_Message(0)], BeatMeta)


def test_take_keeps_no_references() -> None:
    messages = [_Message(i) for i in range(100)]
    before = [sys.getrefcount(x) for x in (messages[0], messages[0]._headers, Record)]
    for _ in range(100):
        take(messages, Record)
    with pytest.raises(TypeError):
        take([*messages, _Message(0, timestamp=None)], Record)
    assert [sys.getrefcount(x) for x in (messages[0], messages[0]._headers, Record)] == before


@dataclass
class _Slow:
    """The same record as an object that is not a Record: the decoder takes it record by record."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None


_BEAT = np.linspace(-1, 1, m.BEAT_LENGTH, dtype=np.float32)
_BINARY = [(m.CONTENT_TYPE_HEADER, m.BINARY_CONTENT_TYPE.encode())]


def _variant(kind: str, offset: int) -> Record:
    value, key, headers, ts = (
        m.encode_beat_binary(_BEAT + offset),
        b"device-1",
        list(_BINARY),
        1_700_000_000_000,
    )
    if kind == "unicode key":
        key = "心-é".encode()
    elif kind == "another header first":
        headers = [("traceparent", b"00-1"), *_BINARY]
    elif kind == "two content types":
        headers = [*_BINARY, (m.CONTENT_TYPE_HEADER, m.JSON_CONTENT_TYPE.encode())]
    elif kind == "upper-case header":
        headers = [("Content-Type", _BINARY[0][1])]
    elif kind == "non-ascii header":
        headers = [("cöntent-type", b"x"), *_BINARY]
    elif kind == "content type with parameters":
        headers = [(m.CONTENT_TYPE_HEADER, _BINARY[0][1] + b"; v=1")]
    elif kind == "short":
        value = value[:-4]
    elif kind == "empty":
        value = b""
    elif kind == "no value":
        value = None  # type: ignore[assignment]
    elif kind == "no key":
        key = b""
    elif kind == "bad utf-8 key":
        key = b"\xff\xfe"
    elif kind == "timestamp before 1970":
        ts = -1
    elif kind == "timestamp after 9999":
        ts = m.MAX_BEAT_TIME_MS + 1
    elif kind == "nan":
        value = m.encode_beat_binary(np.full(m.BEAT_LENGTH, np.nan, dtype=np.float32))
    elif kind == "json":
        value = m.encode_beat_json("device-1", _BEAT.tolist())
        headers = m.beat_headers()
    elif kind == "no headers":
        headers = None  # type: ignore[assignment]
    return Record("beats", 0, offset, ts, key, value, headers)


PLAIN = ["plain", "unicode key", "another header first", "two content types", "nan"]
OTHERS = [
    "upper-case header",
    "non-ascii header",
    "content type with parameters",
    "short",
    "empty",
    "no value",
    "no key",
    "bad utf-8 key",
    "timestamp before 1970",
    "timestamp after 9999",
    "json",
    "no headers",
]


def _view(batch: Any) -> tuple:
    return (
        batch.beats.tolist(),
        [(b.record.offset, b.source_id, b.beat_time_ms, b.beat_id, b.label) for b in batch.meta],
        [(r.record.offset, r.reason, r.message) for r in batch.rejects],
    )


@pytest.mark.parametrize("seed", range(8))
def test_a_plain_binary_batch_decodes_as_record_by_record(seed: int) -> None:
    """The C path takes exactly the batches it should, and gives what the Python path gives."""
    rng = random.Random(seed)
    decoder = BeatDecoder(m.BEAT_LENGTH, 65536, 1024)
    for size in (1, 2, 5, 40):
        kinds = [rng.choice(PLAIN) for _ in range(size)]
        if seed % 2:  # half the batches carry one record the C path must leave to Python
            kinds[rng.randrange(size)] = rng.choice(OTHERS)
        records = [_variant(kind, i) for i, kind in enumerate(kinds)]
        plain = binary_beats(
            records, BeatMeta, 4 * m.BEAT_LENGTH, m.CONTENT_TYPE_HEADER, _BINARY[0][1], m.MAX_BEAT_TIME_MS
        )
        assert (plain is not None) == all(k in PLAIN for k in kinds), kinds
        slow = [_Slow(*r) for r in records]
        assert _view(decoder.decode(records)) == _view(decoder.decode(slow)), kinds  # type: ignore[arg-type]


def test_every_other_variant_is_left_to_python() -> None:
    for kind in OTHERS:
        records = [_variant("plain", 0), _variant(kind, 1)]
        plain = binary_beats(
            records, BeatMeta, 4 * m.BEAT_LENGTH, m.CONTENT_TYPE_HEADER, _BINARY[0][1], m.MAX_BEAT_TIME_MS
        )
        assert plain is None, kind


def test_a_limit_below_one_beat_leaves_binary_beats_to_python() -> None:
    """``--max-record-bytes`` under a binary beat's size makes every one oversized, named so."""
    batch = BeatDecoder(m.BEAT_LENGTH, 100, 1024).decode([_variant("plain", 0)])
    assert [r.reason for r in batch.rejects] == [m.DeadLetterReason.OVERSIZED]


def test_plain_batches_keep_no_references() -> None:
    records = [_variant("plain", i) for i in range(50)]
    args = (BeatMeta, 4 * m.BEAT_LENGTH, m.CONTENT_TYPE_HEADER, _BINARY[0][1], m.MAX_BEAT_TIME_MS)
    before = [sys.getrefcount(x) for x in (records[0], records[0].value, records[0].timestamp)]
    for _ in range(100):
        assert binary_beats(records, *args) is not None
        assert binary_beats([*records, _variant("short", 50)], *args) is None
    assert [sys.getrefcount(x) for x in (records[0], records[0].value, records[0].timestamp)] == before


class _Clearing(_Message):
    """A message whose ``error()`` empties the list it came in: the only other reference to the messages."""

    def __init__(self, offset: int, messages: list[Any]) -> None:
        super().__init__(offset)
        self._messages = messages

    def error(self) -> Any:
        self._messages.clear()
        return None


def test_take_holds_the_messages_while_their_methods_run() -> None:
    messages: list[Any] = []
    messages[:] = [_Clearing(i, messages) for i in range(3)]
    records, failed = take(messages, Record)
    assert [r.offset for r in records] == [0, 1, 2] and failed == []


class _Peeking(_Message):
    """A message whose ``partition()`` reads every Record the garbage collector knows of."""

    def partition(self) -> int:
        import gc

        for o in gc.get_objects():
            if type(o) is Record:
                repr(o)  # a half-built one (NULL fields) raises SystemError here, or worse
        return 3


def test_no_half_built_record_is_visible_while_methods_run() -> None:
    records, _ = take([_Peeking(0), _Peeking(1)], Record)
    assert [r.partition for r in records] == [3, 3]


def test_a_model_of_no_samples_leaves_every_batch_to_python() -> None:
    assert binary_beats([_variant("empty", 0)], BeatMeta, 0, "content-type", _BINARY[0][1], 1) is None
