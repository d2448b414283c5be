"""A corpus of malformed beats, each with the dead-letter reason the worker must give it.

Used by the decoder's unit tests (every kind, both JSON parsers), the schema agreement test (every
JSON document here and in :data:`VALID_JSON`: the schema and the decoder accept the same ones),
the worker's integration tests and chaos scenario 7 (every kind through a running worker).

Some kinds need more than a topic at the broker's defaults (:attr:`Poison.needs`): ``large`` a
record of up to 5 MB, so an input topic (and producer) allowing that; ``future`` a record
timestamp two days ahead, so an input topic with ``message.timestamp.after.max.ms`` raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import orjson

from ecg_anomaly.schemas import messages as m

J = JSON_HEADERS = m.beat_headers(m.JSON_CONTENT_TYPE)
B = m.beat_headers(m.BINARY_CONTENT_TYPE)
N = m.BEAT_LENGTH
GOOD = [0.1] * N
DAY_MS = 86_400_000
LARGE_TOPIC_BYTES = 8 * 1024 * 1024  # max.message.bytes of an input topic taking the large kinds
FUTURE_TOPIC_AFTER_MS = 10 * 365 * DAY_MS  # message.timestamp.after.max.ms of one taking the future kinds


class Poison(NamedTuple):
    name: str
    reason: str  # the dead-letter reason a worker with default options gives it
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    stamp: Callable[[int], int] | None = None  # record timestamp from the send time (ms); None: now
    needs: str = ""  # "", "large" or "future" (see the module docstring)


def _j(obj: object) -> bytes:
    return orjson.dumps(obj)


def _f32(*patch: tuple[int, float]) -> bytes:
    beat = np.zeros(N, dtype="<f4")
    for i, v in patch:
        beat[i] = v
    return beat.tobytes()


def _padded(size: int) -> bytes:
    """A valid JSON beat of exactly ``size`` bytes (an extra field), over any default record limit."""
    beat = _j({"source_id": "s", "values": GOOD, "padding": ""})
    return beat[:-2] + b"x" * (size - len(beat)) + b'"}'


def _in_two_days(now: int) -> int:
    return now + 2 * DAY_MS


_P = Poison
POISON: list[Poison] = [
    _P("null value", "empty_value", b"s", None, J),
    _P("empty value", "empty_value", b"s", b"", J),
    _P("70 kB value", "oversized", b"s", b" " * 70_000 + _j({"source_id": "s", "values": GOOD}), J),
    _P(
        "text/csv",
        "unknown_content_type",
        b"s",
        _j({"source_id": "s", "values": GOOD}),
        [("content-type", b"text/csv")],
    ),
    _P("xml", "unknown_content_type", b"s", b"<beat/>", [("content-type", b"application/xml")]),
    _P("bad utf-8 in a string", "undecodable_bytes", b"s", b'{"source_id": "\xff\xfe"}', J),
    _P("bad utf-8", "undecodable_bytes", b"s", b"\xc3\x28\xa0\xa1", J),
    _P("binary, bad utf-8 key", "undecodable_bytes", b"\xff\xfe", _f32(), B),
    _P("cut mid-array", "invalid_json", b"s", b'{"source_id": "s", "values": [1, 2', J),
    _P("not json", "invalid_json", b"s", b"not json", J),
    _P("single quotes", "invalid_json", b"s", b"{'source_id': 's'}", J),
    _P(
        "NaN literal",
        "invalid_json",
        b"s",
        b'{"source_id": "s", "values": [NaN' + b", 0" * (N - 1) + b"]}",
        J,
    ),
    _P(
        "trailing comma",
        "invalid_json",
        b"s",
        b'{"source_id": "s", "values": [0' + b", 0" * (N - 1) + b",]}",
        J,
    ),
    _P("an array", "wrong_type", b"s", b"[1, 2, 3]", J),
    _P("a string", "wrong_type", b"s", b'"a string"', J),
    _P("a number", "wrong_type", b"s", b"42", J),
    _P("null", "wrong_type", b"s", b"null", J),
    _P("no source_id", "missing_field", b"s", _j({"values": GOOD}), J),
    _P("no values", "missing_field", b"s", _j({"source_id": "s"}), J),
    _P("values null", "wrong_type", b"s", _j({"source_id": "s", "values": None}), J),
    _P("source_id null", "wrong_type", b"s", _j({"source_id": None, "values": GOOD}), J),
    _P("source_id a number", "wrong_type", b"s", _j({"source_id": 7, "values": GOOD}), J),
    _P("source_id empty", "wrong_type", b"s", _j({"source_id": "", "values": GOOD}), J),
    _P("values a string", "wrong_type", b"s", _j({"source_id": "s", "values": "0.1,0.2"}), J),
    _P("values an object", "wrong_type", b"s", _j({"source_id": "s", "values": {"0": 0.1}}), J),
    _P("values strings", "wrong_type", b"s", _j({"source_id": "s", "values": ["0.1"] * N}), J),
    _P(
        "values nested", "wrong_type", b"s", _j({"source_id": "s", "values": [[0.1]] * N}), J
    ),  # simdjson would flatten it
    _P("values null items", "wrong_type", b"s", _j({"source_id": "s", "values": [None] * N}), J),
    _P("values booleans", "wrong_type", b"s", _j({"source_id": "s", "values": [True] * N}), J),
    _P("beat_id a number", "wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_id": 5}), J),
    _P("beat_id null", "wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_id": None}), J),
    _P("label unknown", "wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "label": "maybe"}), J),
    _P("label null", "wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "label": None}), J),
    _P("beat_time null", "wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_time": None}), J),
    _P(
        "beat_time words",
        "wrong_type",
        b"s",
        _j({"source_id": "s", "values": GOOD, "beat_time": "yesterday"}),
        J,
    ),
    _P(
        "beat_time no offset",
        "wrong_type",
        b"s",
        _j({"source_id": "s", "values": GOOD, "beat_time": "2026-01-01T00:00:00"}),
        J,
    ),
    _P(
        "beat_time space",
        "wrong_type",
        b"s",
        _j({"source_id": "s", "values": GOOD, "beat_time": "2026-01-01 00:00:00Z"}),
        J,
    ),
    _P(
        "beat_time basic format",
        "wrong_type",
        b"s",
        _j({"source_id": "s", "values": GOOD, "beat_time": "20260101T000000Z"}),
        J,
    ),
    _P(
        "beat_time 30 February",
        "wrong_type",
        b"s",
        _j({"source_id": "s", "values": GOOD, "beat_time": "2026-02-30T00:00:00Z"}),
        J,
    ),
    _P(
        "beat_time 10**19", "wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_time": 10**19}), J
    ),
    _P(
        "beat_time fraction",
        "wrong_type",
        b"s",
        _j({"source_id": "s", "values": GOOD, "beat_time": 1000.5}),
        J,
    ),
    _P(
        "beat_time a boolean",
        "wrong_type",
        b"s",
        _j({"source_id": "s", "values": GOOD, "beat_time": True}),
        J,
    ),
    _P(
        "beat_time year 10000",
        "wrong_type",
        b"s",
        _j({"source_id": "s", "values": GOOD, "beat_time": "9999-12-31T23:00:00-05:00"}),
        J,
    ),
    _P(
        "beat_time 1969",
        "wrong_type",
        b"s",
        _j({"source_id": "s", "values": GOOD, "beat_time": "1969-12-31T23:59:59Z"}),
        J,
    ),
    _P("139 values", "wrong_length", b"s", _j({"source_id": "s", "values": GOOD[:-1]}), J),
    _P("141 values", "wrong_length", b"s", _j({"source_id": "s", "values": [*GOOD, 0.1]}), J),
    _P("no values at all", "wrong_length", b"s", _j({"source_id": "s", "values": []}), J),
    _P("binary, 556 bytes", "wrong_length", b"s", _f32()[:-4], B),
    _P("binary, 564 bytes", "wrong_length", b"s", _f32() + b"\0\0\0\0", B),
    _P("1e39", "non_finite", b"s", b'{"source_id": "s", "values": [1e39' + b", 0" * (N - 1) + b"]}", J),
    _P(
        "just over float32",
        "non_finite",
        b"s",
        b'{"source_id": "s", "values": [3.4028235e38' + b", 0" * (N - 1) + b"]}",
        J,
    ),
    _P("1e400", "non_finite", b"s", b'{"source_id": "s", "values": [1e400' + b", 0" * (N - 1) + b"]}", J),
    _P(
        "-1e400", "non_finite", b"s", b'{"source_id": "s", "values": [0' + b", 0" * (N - 2) + b", -1e400]}", J
    ),
    _P(
        "401-digit integer",
        "non_finite",
        b"s",
        b'{"source_id": "s", "values": [1' + b"0" * 400 + b", 0" * (N - 1) + b"]}",
        J,
    ),
    _P("binary NaN", "non_finite", b"s", _f32((3, float("nan"))), B),
    _P("binary infinity", "non_finite", b"s", _f32((0, float("inf"))), B),
    _P("binary, no key", "missing_key", None, _f32(), B),
    _P("binary, empty key", "missing_key", b"", _f32(), B),
    # where simdjson (the decoder's fast path) and orjson disagree, orjson's verdict holds
    _P("byte order mark", "invalid_json", b"s", b"\xef\xbb\xbf" + _j({"source_id": "s", "values": GOOD}), J),
    _P(
        "values twice",
        "wrong_type",
        b"s",
        b'{"source_id": "s", "values": ' + _j(GOOD) + b', "values": "x"}',
        J,
    ),  # last wins
    _P(
        "beat_time an object",
        "wrong_type",
        b"s",
        _j({"source_id": "s", "values": GOOD, "beat_time": {"ms": 1}}),
        J,
    ),
    _P("lone surrogate", "invalid_json", b"s", b'{"source_id": "\\ud800", "values": ' + _j(GOOD) + b"}", J),
    _P(
        "1e400 and a lone surrogate",
        "invalid_json",
        b"s",
        b'{"source_id": "\\ud800", "values": [1e400' + b", 0" * (N - 1) + b"]}",
        J,
    ),
    # keys and source ids: the outputs' key
    _P("binary, 100 kB key", "oversized_key", b"k" * 100_000, _f32(), B),
    _P("binary, 600 kB key", "oversized_key", b"k" * 600_000, _f32(), B),
    _P("json, 600 kB key", "oversized_key", b"k" * 600_000, _j({"source_id": "s", "values": GOOD}), J),
    _P("source_id 1025 bytes", "oversized_key", b"s", _j({"source_id": "s" * 1025, "values": GOOD}), J),
    _P(
        "source_id 1026 bytes of UTF-8",
        "oversized_key",
        b"s",
        _j({"source_id": "é" * 513, "values": GOOD}),
        J,
    ),
    # records whose dead letter the dead-letter topic refuses at its defaults: written reduced
    _P("4.1 MB value", "oversized", b"s", _padded(4_100_000), J, needs="large"),
    _P("4.2 MB value", "oversized", b"s", _padded(4_200_000), J, needs="large"),
    _P("5 MB value", "oversized", b"s", _padded(5_000_000), J, needs="large"),
    _P("two days ahead", "invalid_json", b"s", b"not json, and from the future", J, _in_two_days, "future"),
    _P("1970", "invalid_json", b"s", b"not json, and from 1970", J, lambda now: 1),
]

# JSON beats the worker scores (and the schema accepts): the other side of the schema agreement test.
VALID_JSON: list[tuple[str, bytes]] = [
    ("minimal", _j({"source_id": "s", "values": GOOD})),
    (
        "every field",
        _j({"source_id": "s", "values": GOOD, "beat_time": 1, "beat_id": "b", "label": "anomaly"}),
    ),
    ("integers", _j({"source_id": "s", "values": [1] * N})),
    (
        "a 22-digit integer",
        b'{"source_id": "s", "values": [1180591620717411303424' + b", 0" * (N - 1) + b"]}",
    ),
    ("float32 maximum", b'{"source_id": "s", "values": [3.4028234663852886e38' + b", 0" * (N - 1) + b"]}"),
    ("underflow to zero", b'{"source_id": "s", "values": [1e-400' + b", 0" * (N - 1) + b"]}"),
    ("beat_time Z", _j({"source_id": "s", "values": GOOD, "beat_time": "2026-01-01T00:00:00Z"})),
    ("beat_time lower case", _j({"source_id": "s", "values": GOOD, "beat_time": "2026-01-01t00:00:00.5z"})),
    (
        "beat_time offset",
        _j({"source_id": "s", "values": GOOD, "beat_time": "2026-01-01T01:00:00.123456789+01:00"}),
    ),
    ("beat_time 1970", _j({"source_id": "s", "values": GOOD, "beat_time": 0})),
    ("beat_time 9999", _j({"source_id": "s", "values": GOOD, "beat_time": m.MAX_BEAT_TIME_MS})),
    ("beat_time 1000.0", b'{"source_id": "s", "values": ' + _j(GOOD) + b', "beat_time": 1000.0}'),
    ("extra fields", _j({"source_id": "s", "values": GOOD, "lead": "II", "meta": {"a": [1, None]}})),
    ("source_id 1024 bytes", _j({"source_id": "s" * 1024, "values": GOOD})),
    ("escaped pair", b'{"source_id": "\\ud83d\\ude00", "values": ' + _j(GOOD) + b"}"),
    ("duplicate source_id, last wins", b'{"source_id": 5, "values": ' + _j(GOOD) + b', "source_id": "s"}'),
]

# content-type headers read as the JSON beat format (media type rules: case, parameters, spaces)
JSON_CONTENT_TYPES = [
    b"application/json",
    b"Application/JSON",
    b"application/json; charset=utf-8",
    b" application/json ",
]
