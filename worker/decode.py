"""Decode and validate a poll's records into one preallocated float32 batch.

Every record ends as exactly one of: a row of the batch (with its metadata) or
a :class:`Reject` carrying a :class:`~schemas.messages.DeadLetterReason`. The
per-record Python work is kept to a few type checks; numbers are converted and
checked for finiteness once per batch with numpy.

JSON beats take a fast path first: simdjson parses the document and hands the
``values`` array over as one buffer of doubles, so no Python float is built
per number (parsing 140 numbers into Python floats was half of the worker's
time on JSON). Only a document of the common shape takes it; anything else
(another top-level type, duplicate keys, nested arrays, a parse error) goes
through orjson and the checks that name the dead-letter reason, so both paths
accept and reject exactly the same records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson
import simdjson

from ecg_anomaly.schemas.messages import (
    BINARY_CONTENT_TYPE,
    CONTENT_TYPE_HEADER,
    JSON_CONTENT_TYPE,
    LABELS,
    MAX_BEAT_TIME_MS,
    DeadLetterReason,
    beat_time_ms,
)
from ecg_anomaly.worker._records import binary_beats

_NUMBER_TYPES = frozenset((int, float))
_PLAIN_TYPES = frozenset((str, int, float, bool, type(None)))  # not a simdjson proxy
_Fields = tuple[Any, Any, Any, Any, Any]  # values as a float64 buffer, source_id, beat_time, beat_id, label
_BOM = b"\xef\xbb\xbf"  # simdjson skips a UTF-8 byte order mark, orjson rejects it: the careful path decides
_ABSENT: Any = object()  # an optional field that is not there (null is a wrong type, as in the schema)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # larger magnitudes are non_finite (the schema's bound too)
_NON_FINITE = "values contain NaN or infinity, or numbers outside the float32 range"


class BeatMeta(NamedTuple):
    """What the outputs need to know about one scored beat besides its values.

    A tuple: worker._records builds those of binary beats in C.
    """

    record: Any  # the ConsumerRecord (topic, partition, offset, timestamp, key, value, headers)
    source_id: str
    beat_time_ms: int
    beat_id: str | None = None
    label: str | None = None

    @property
    def key(self) -> bytes:
        """The output records' key: the source id, so one source's outputs stay on one partition."""
        return self.source_id.encode()


@dataclass(frozen=True, slots=True)
class Reject:
    record: Any
    reason: DeadLetterReason
    message: str


@dataclass
class DecodedBatch:
    beats: np.ndarray  # float32 [len(meta), input_length]
    meta: list[BeatMeta]
    rejects: list[Reject] = field(default_factory=list)


class _Invalid(Exception):
    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class BeatDecoder:
    """Turns records into a batch (one decoder per worker: it holds a simdjson parser).

    Each batch gets its own array: the loop scores a batch on another thread while
    it decodes the next one.
    """

    def __init__(self, input_length: int, max_record_bytes: int, max_key_bytes: int) -> None:
        self.input_length = input_length
        self.max_record_bytes = max_record_bytes
        self.max_key_bytes = max_key_bytes
        self._binary_bytes = 4 * input_length
        self._parser = simdjson.Parser()

    def decode(self, records: list[Any]) -> DecodedBatch:
        plain = self._plain_binary(records)
        if plain is not None:
            meta, rows = plain
            return self._batch([], [], rows, meta, [])
        json_rows: list[Any] = []  # per beat, its values as a buffer of float64
        json_meta: list[BeatMeta] = []
        binary_rows: list[bytes] = []
        binary_meta: list[BeatMeta] = []
        rejects: list[Reject] = []
        for record in records:
            try:
                content_type = _content_type(record.headers)
                value = record.value
                if not value:
                    raise _Invalid(DeadLetterReason.EMPTY_VALUE, "record value is null or empty")
                if len(value) > self.max_record_bytes:
                    raise _Invalid(
                        DeadLetterReason.OVERSIZED,
                        f"value is {len(value)} bytes, more than --max-record-bytes={self.max_record_bytes}",
                    )
                if record.key is not None and len(record.key) > self.max_key_bytes:
                    raise _Invalid(
                        DeadLetterReason.OVERSIZED_KEY,
                        f"record key is {len(record.key)} bytes, "
                        f"more than --max-key-bytes={self.max_key_bytes}",
                    )
                if content_type is None or content_type == JSON_CONTENT_TYPE:
                    values, meta = self._json(record)
                    json_rows.append(values)
                    json_meta.append(meta)
                elif content_type == BINARY_CONTENT_TYPE:
                    binary_meta.append(self._binary(record))
                    binary_rows.append(value)
                else:
                    raise _Invalid(
                        DeadLetterReason.UNKNOWN_CONTENT_TYPE,
                        f"content-type {content_type!r} is not {JSON_CONTENT_TYPE} or {BINARY_CONTENT_TYPE}",
                    )
            except _Invalid as bad:
                rejects.append(Reject(record, bad.reason, bad.message))
        return self._batch(json_rows, json_meta, binary_rows, binary_meta, rejects)

    def _plain_binary(self, records: list[Any]) -> tuple[list[BeatMeta], list[bytes]] | None:
        """A batch of nothing but plain binary beats (a backlog of one producer's), checked in C.

        All or nothing, so a batch's rows keep the order the record-by-record path gives them; any
        other record (JSON, another header, a bad beat) sends the whole batch that way, which names
        the dead-letter reasons. Plain: the first content-type header is exactly
        ``content-type: application/x-ecg-beat-f32le``, the value one beat, the key UTF-8 and the
        timestamp a beat time (the checks of :meth:`_binary`, tested to agree).
        """
        if self._binary_bytes > self.max_record_bytes:
            return None
        limit = self.max_key_bytes
        if any(r.key is not None and len(r.key) > limit for r in records):
            return None
        return binary_beats(
            records, BeatMeta, self._binary_bytes, CONTENT_TYPE_HEADER, _BINARY_BYTES, MAX_BEAT_TIME_MS
        )

    def _batch(
        self,
        json_rows: list[Any],
        json_meta: list[BeatMeta],
        binary_rows: list[bytes],
        binary_meta: list[BeatMeta],
        rejects: list[Reject],
    ) -> DecodedBatch:
        """The batch's array (JSON rows first), with non-finite beats moved to the rejects."""
        n_json, n_binary = len(json_rows), len(binary_rows)
        beats = np.empty((n_json + n_binary, self.input_length), dtype=np.float32)
        if n_json:
            values = np.frombuffer(b"".join(json_rows), dtype=np.float64).reshape(n_json, -1)
            with np.errstate(over="ignore"):  # beyond float32 becomes inf: rejected as non_finite below
                beats[:n_json] = values
            # Just above the float32 maximum a value rounds down to it instead of overflowing; the
            # schema's bound is the maximum itself, so such a row is made non-finite here too.
            over = np.abs(values).max(axis=1) > FLOAT32_MAX
            if over.any():
                beats[:n_json][over] = np.inf
        if n_binary:
            beats[n_json:] = np.frombuffer(b"".join(binary_rows), dtype="<f4").reshape(n_binary, -1)
        meta = json_meta + binary_meta
        finite = np.isfinite(beats).all(axis=1)
        if not finite.all():
            keep = np.flatnonzero(finite)
            for row in np.flatnonzero(~finite).tolist():
                rejects.append(Reject(meta[row].record, DeadLetterReason.NON_FINITE, _NON_FINITE))
            rejects.sort(key=lambda r: (r.record.partition, r.record.offset))  # dead letters in input order
            beats = beats[keep]
            meta = [meta[i] for i in keep.tolist()]
        return DecodedBatch(beats, meta, rejects)

    def _json(self, record: Any) -> tuple[Any, BeatMeta]:
        fields = self._json_fast(record.value) or self._json_careful(record.value)
        values, source_id, beat_time, beat_id, label = fields
        if type(source_id) is not str or not source_id:
            raise _Invalid(DeadLetterReason.WRONG_TYPE, "source_id must be a non-empty string")
        if len(source_id) * 4 > self.max_key_bytes and len(source_id.encode()) > self.max_key_bytes:
            raise _Invalid(
                DeadLetterReason.OVERSIZED_KEY,
                f"source_id is {len(source_id.encode())} bytes of UTF-8 (the outputs' record key), "
                f"more than --max-key-bytes={self.max_key_bytes}",
            )
        beat_time_ms = _record_time_ms(record) if beat_time is _ABSENT else _beat_time_ms(beat_time)
        if beat_id is _ABSENT:
            beat_id = None
        elif type(beat_id) is not str:
            raise _Invalid(DeadLetterReason.WRONG_TYPE, "beat_id must be a string")
        if label is _ABSENT:
            label = None
        elif label not in LABELS:
            raise _Invalid(DeadLetterReason.WRONG_TYPE, f"label must be one of {', '.join(LABELS)}")
        return values, BeatMeta(record, source_id, beat_time_ms, beat_id, label)

    def _json_fast(self, value: bytes) -> _Fields | None:
        """The fields of a document of the common shape, with ``values`` as a float64 buffer; else None.

        The common shape: one object, no key twice, ``values`` the only array (of ``input_length``
        numbers). simdjson's proxies must not outlive the next parse, so only plain values leave.
        """
        first = value.find(b"[")  # memchr: far cheaper than counting
        if first < 0 or value.find(b"[", first + 1) >= 0 or value.startswith(_BOM):
            return None  # nested or other arrays (simdjson would flatten ``[[1], [2]]``): careful path
        try:
            doc = self._parser.parse(value)
            if type(doc) is not simdjson.Object:
                return None
            keys = list(doc.keys())  # doc.get() of an absent key costs a caught exception (3 us)
            if "values" not in keys or "source_id" not in keys or len(set(keys)) != len(keys):
                return None  # missing (named by the careful path) or duplicate keys (orjson keeps the last)
            array = doc["values"]
            if type(array) is not simdjson.Array or len(array) != self.input_length:
                return None
            source_id = doc["source_id"]
            beat_time = doc["beat_time"] if "beat_time" in keys else _ABSENT
            beat_id = doc["beat_id"] if "beat_id" in keys else _ABSENT
            label = doc["label"] if "label" in keys else _ABSENT
            optional = [v for v in (beat_time, beat_id, label) if v is not _ABSENT]
            if not _PLAIN_TYPES.issuperset(map(type, (source_id, *optional))) or None in optional:
                return None  # a proxy, or a null the careful path names
            values = array.as_buffer(of_type="d")
        except (ValueError, TypeError, RuntimeError):  # not parseable or not numbers: careful path
            return None
        return values, source_id, beat_time, beat_id, label

    def _json_careful(self, value: bytes) -> _Fields:
        """orjson and every check, in the order that decides which reason a bad beat gets."""
        try:
            beat = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError as utf:
                raise _Invalid(DeadLetterReason.UNDECODABLE_BYTES, f"value is not UTF-8: {utf}") from None
            beat = _standard_json(text)  # e.g. 1e400: JSON, but not a double; non_finite below
            if beat is _ABSENT:
                raise _Invalid(DeadLetterReason.INVALID_JSON, f"value is not JSON: {exc}") from None
        if type(beat) is not dict:
            raise _Invalid(
                DeadLetterReason.WRONG_TYPE, f"a JSON beat is an object, got {type(beat).__name__}"
            )
        values = beat.get("values", _ABSENT)
        source_id = beat.get("source_id", _ABSENT)
        if values is _ABSENT or source_id is _ABSENT:
            missing = [k for k in ("source_id", "values") if k not in beat]
            raise _Invalid(DeadLetterReason.MISSING_FIELD, f"missing field(s): {', '.join(missing)}")
        if type(source_id) is not str or not source_id:
            raise _Invalid(DeadLetterReason.WRONG_TYPE, "source_id must be a non-empty string")
        if type(values) is not list:
            raise _Invalid(
                DeadLetterReason.WRONG_TYPE, f"values must be an array, got {type(values).__name__}"
            )
        if len(values) != self.input_length:
            raise _Invalid(
                DeadLetterReason.WRONG_LENGTH, f"values has {len(values)} items, expected {self.input_length}"
            )
        if not _NUMBER_TYPES.issuperset(map(type, values)):
            raise _Invalid(DeadLetterReason.WRONG_TYPE, "values must all be numbers")
        try:
            values = np.array(values, dtype=np.float64).tobytes()
        except OverflowError:  # an integer beyond the double range (only the standard library keeps one)
            raise _Invalid(DeadLetterReason.NON_FINITE, _NON_FINITE) from None
        return (
            values,
            source_id,
            beat.get("beat_time", _ABSENT),
            beat.get("beat_id", _ABSENT),
            beat.get("label", _ABSENT),
        )

    def _binary(self, record: Any) -> BeatMeta:
        if len(record.value) != self._binary_bytes:
            raise _Invalid(
                DeadLetterReason.WRONG_LENGTH,
                f"binary beat is {len(record.value)} bytes, expected {self._binary_bytes} "
                f"({self.input_length} float32)",
            )
        if not record.key:
            raise _Invalid(DeadLetterReason.MISSING_KEY, "binary beat without a record key (its source id)")
        try:
            source_id = record.key.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid(DeadLetterReason.UNDECODABLE_BYTES, "record key is not UTF-8") from None
        return BeatMeta(record, source_id, _record_time_ms(record))


_BINARY_BYTES = BINARY_CONTENT_TYPE.encode()
_CONTENT_TYPES = {
    JSON_CONTENT_TYPE.encode(): JSON_CONTENT_TYPE,
    _BINARY_BYTES: BINARY_CONTENT_TYPE,
}


def _content_type(headers: list[tuple[str, bytes]] | None) -> str | None:
    for key, value in headers or ():
        if key == CONTENT_TYPE_HEADER or key.lower() == CONTENT_TYPE_HEADER:
            known = _CONTENT_TYPES.get(value)  # the common case, without parsing
            if known is not None:
                return known
            try:
                return value.decode("ascii").split(";", 1)[0].strip().lower()
            except (UnicodeDecodeError, AttributeError):
                return repr(value)
    return None


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _standard_json(text: str) -> Any:
    """The document the standard library reads from what orjson refused, or ``_ABSENT`` if not JSON.

    orjson refuses a number beyond the double range (``1e400``, a 400-digit integer), which JSON
    (RFC 8259) allows: such a beat is ``non_finite``, not ``invalid_json``. The standard library
    also accepts ``NaN`` and lone surrogate escapes, which are not JSON (RFC 7493): those stay refused.
    """
    try:
        document = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return _ABSENT
    stack = [document]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if any("\ud800" <= c <= "\udfff" for c in item):
                return _ABSENT
        elif type(item) is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return document


def _record_time_ms(record: Any) -> int:
    """The record's timestamp as the beat time, in the range :func:`_beat_time_ms` accepts.

    Kafka 4 brokers refuse timestamps more than an hour ahead by default; older brokers, or one
    configured to, store whatever a producer set.
    """
    ms: int = record.timestamp
    if 0 <= ms <= MAX_BEAT_TIME_MS:
        return ms
    raise _Invalid(
        DeadLetterReason.WRONG_TYPE,
        f"the record timestamp {ms} (the beat time when beat_time is absent) "
        "is not in 1970-01-01 to 9999-12-31",
    )


def _beat_time_ms(beat_time: Any) -> int:
    """Epoch milliseconds of an accepted ``beat_time`` (:func:`~schemas.messages.beat_time_ms`).

    The range matters: a larger integer passed JSON and the schema's old ``minimum`` but made the
    outputs' ISO-8601 time (and, past 2**63, numpy) fail, which would have stopped every batch it
    was in, over and over.
    """
    ms = beat_time_ms(beat_time)
    if ms is None:
        raise _Invalid(
            DeadLetterReason.WRONG_TYPE,
            "beat_time must be epoch milliseconds or an RFC 3339 date-time with a UTC offset, "
            "1970-01-01 to 9999-12-31",
        )
    return ms
