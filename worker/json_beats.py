"""JSON beats: a document's fields, or the dead-letter reason that names what is wrong with it.

A fast path first: simdjson parses the document and hands the ``values`` array over as one buffer
of doubles, so no Python float is built per number (parsing 140 numbers into Python floats was half
of the worker's time on JSON). Only a document of the common shape takes it; anything else (another
top-level type, duplicate keys, nested arrays, a null, a parse error) goes through orjson and the
checks that name the dead-letter reason, so both paths accept and reject exactly the same documents.
What orjson refuses but JSON allows (a number beyond the double range) is read by the standard
library, and then fails as ``non_finite``. ``beat.schema.json`` accepts the same documents (tested).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import simdjson

from ecg_anomaly.schemas.messages import LABELS, MAX_BEAT_TIME_MS, DeadLetterReason, beat_time_ms

_NUMBER_TYPES = frozenset((int, float))
_PLAIN_TYPES = frozenset((str, int, float, bool, type(None)))  # not a simdjson proxy
_Fields = tuple[Any, Any, Any, Any, Any]  # values as a float64 buffer, source_id, beat_time, beat_id, label
_BOM = b"\xef\xbb\xbf"  # simdjson skips a UTF-8 byte order mark, orjson rejects it: the careful path decides
_ABSENT: Any = object()  # an optional field that is not there (null is a wrong type, as in the schema)
NON_FINITE = "values contain NaN or infinity, or numbers outside the float32 range"


class Invalid(Exception):
    """A record's dead-letter reason and message."""

    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class JsonBeats:
    """Reads JSON beats with two readers that agree: :meth:`fast` (simdjson) and :meth:`careful`.

    One per worker: it holds a simdjson parser, whose results die with its next parse.
    """

    def __init__(self, input_length: int, max_key_bytes: int) -> None:
        self.input_length = input_length
        self.max_key_bytes = max_key_bytes
        self._parser = simdjson.Parser()

    def read(self, value: bytes, timestamp: int) -> tuple[Any, str, int, str | None, str | None]:
        fields = self.fast(value) or self.careful(value)
        values, source_id, beat_time, beat_id, label = fields
        if type(source_id) is not str or not source_id:
            raise Invalid(DeadLetterReason.WRONG_TYPE, "source_id must be a non-empty string")
        if len(source_id) * 4 > self.max_key_bytes and len(source_id.encode()) > self.max_key_bytes:
            raise Invalid(
                DeadLetterReason.OVERSIZED_KEY,
                f"source_id is {len(source_id.encode())} bytes of UTF-8 (the outputs' record key), "
                f"more than --max-key-bytes={self.max_key_bytes}",
            )
        beat_time_ms = record_time_ms(timestamp) if beat_time is _ABSENT else _beat_time_ms(beat_time)
        if beat_id is _ABSENT:
            beat_id = None
        elif type(beat_id) is not str:
            raise Invalid(DeadLetterReason.WRONG_TYPE, "beat_id must be a string")
        if label is _ABSENT:
            label = None
        elif label not in LABELS:
            raise Invalid(DeadLetterReason.WRONG_TYPE, f"label must be one of {', '.join(LABELS)}")
        return values, source_id, beat_time_ms, beat_id, label

    def fast(self, value: bytes) -> _Fields | None:
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

    def careful(self, value: bytes) -> _Fields:
        """orjson and every check, in the order that decides which reason a bad beat gets."""
        try:
            beat = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError as utf:
                raise Invalid(DeadLetterReason.UNDECODABLE_BYTES, f"value is not UTF-8: {utf}") from None
            beat = _standard_json(text)  # e.g. 1e400: JSON, but not a double; non_finite below
            if beat is _ABSENT:
                raise Invalid(DeadLetterReason.INVALID_JSON, f"value is not JSON: {exc}") from None
        if type(beat) is not dict:
            raise Invalid(DeadLetterReason.WRONG_TYPE, f"a JSON beat is an object, got {type(beat).__name__}")
        values = beat.get("values", _ABSENT)
        source_id = beat.get("source_id", _ABSENT)
        if values is _ABSENT or source_id is _ABSENT:
            missing = [k for k in ("source_id", "values") if k not in beat]
            raise Invalid(DeadLetterReason.MISSING_FIELD, f"missing field(s): {', '.join(missing)}")
        if type(source_id) is not str or not source_id:
            raise Invalid(DeadLetterReason.WRONG_TYPE, "source_id must be a non-empty string")
        if type(values) is not list:
            raise Invalid(
                DeadLetterReason.WRONG_TYPE, f"values must be an array, got {type(values).__name__}"
            )
        if len(values) != self.input_length:
            raise Invalid(
                DeadLetterReason.WRONG_LENGTH, f"values has {len(values)} items, expected {self.input_length}"
            )
        if not _NUMBER_TYPES.issuperset(map(type, values)):
            raise Invalid(DeadLetterReason.WRONG_TYPE, "values must all be numbers")
        try:
            values = np.array(values, dtype=np.float64).tobytes()
        except OverflowError:  # an integer beyond the double range (only the standard library keeps one)
            raise Invalid(DeadLetterReason.NON_FINITE, NON_FINITE) from None
        return (
            values,
            source_id,
            beat.get("beat_time", _ABSENT),
            beat.get("beat_id", _ABSENT),
            beat.get("label", _ABSENT),
        )


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


def record_time_ms(ms: int) -> int:
    """The record's timestamp as the beat time, in the range :func:`_beat_time_ms` accepts.

    Kafka 4 brokers refuse timestamps more than an hour ahead by default; older brokers, or one
    configured to, store whatever a producer set.
    """
    if 0 <= ms <= MAX_BEAT_TIME_MS:
        return ms
    raise Invalid(
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
        raise Invalid(
            DeadLetterReason.WRONG_TYPE,
            "beat_time must be epoch milliseconds or an RFC 3339 date-time with a UTC offset, "
            "1970-01-01 to 9999-12-31",
        )
    return ms
