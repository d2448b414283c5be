"""A corpus of malformed beats, each with the dead-letter reason the worker must give it.

Used by the decoder's unit test (every kind, both JSON parsers) and chaos scenario 7
(every kind through a running worker).
"""

from __future__ import annotations

import numpy as np
import orjson

from schemas import messages as m

J = JSON_HEADERS = m.beat_headers(m.JSON_CONTENT_TYPE)
B = m.beat_headers(m.BINARY_CONTENT_TYPE)
N = m.BEAT_LENGTH
GOOD = [0.1] * N


def _j(obj: object) -> bytes:
    return orjson.dumps(obj)


def _f32(*patch: tuple[int, float]) -> bytes:
    beat = np.zeros(N, dtype="<f4")
    for i, v in patch:
        beat[i] = v
    return beat.tobytes()


# (expected dead-letter reason, key, value, headers): the kinds of malformed record
POISON: list[tuple[str, bytes | None, bytes | None, list]] = [
    ("empty_value", b"s", None, J),
    ("empty_value", b"s", b"", J),
    ("oversized", b"s", b" " * 70_000 + _j({"source_id": "s", "values": GOOD}), J),
    ("unknown_content_type", b"s", _j({"source_id": "s", "values": GOOD}), [("content-type", b"text/csv")]),
    ("unknown_content_type", b"s", b"<beat/>", [("content-type", b"application/xml")]),
    ("undecodable_bytes", b"s", b'{"source_id": "\xff\xfe"}', J),
    ("undecodable_bytes", b"s", b"\xc3\x28\xa0\xa1", J),
    ("undecodable_bytes", b"\xff\xfe", _f32(), B),
    ("invalid_json", b"s", b'{"source_id": "s", "values": [1, 2', J),
    ("invalid_json", b"s", b"not json", J),
    ("invalid_json", b"s", b"{'source_id': 's'}", J),
    ("invalid_json", b"s", b'{"source_id": "s", "values": [NaN' + b", 0" * (N - 1) + b"]}", J),
    ("invalid_json", b"s", b'{"source_id": "s", "values": [0' + b", 0" * (N - 1) + b",]}", J),
    ("wrong_type", b"s", b"[1, 2, 3]", J),
    ("wrong_type", b"s", b'"a string"', J),
    ("wrong_type", b"s", b"42", J),
    ("wrong_type", b"s", b"null", J),
    ("missing_field", b"s", _j({"values": GOOD}), J),
    ("missing_field", b"s", _j({"source_id": "s"}), J),
    ("missing_field", b"s", _j({"source_id": "s", "values": None}), J),
    ("wrong_type", b"s", _j({"source_id": 7, "values": GOOD}), J),
    ("wrong_type", b"s", _j({"source_id": "", "values": GOOD}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": "0.1,0.2"}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": {"0": 0.1}}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": ["0.1"] * N}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": [[0.1]] * N}), J),  # simdjson would flatten it
    ("wrong_type", b"s", _j({"source_id": "s", "values": [None] * N}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": [True] * N}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_id": 5}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "label": "maybe"}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_time": "yesterday"}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_time": "2026-01-01T00:00:00"}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_time": 10**19}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_time": "9999-12-31T23:00:00-05:00"}), J),
    ("wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_time": "1969-12-31T23:59:59Z"}), J),
    ("wrong_length", b"s", _j({"source_id": "s", "values": GOOD[:-1]}), J),
    ("wrong_length", b"s", _j({"source_id": "s", "values": [*GOOD, 0.1]}), J),
    ("wrong_length", b"s", _j({"source_id": "s", "values": []}), J),
    ("wrong_length", b"s", _f32()[:-4], B),
    ("wrong_length", b"s", _f32() + b"\0\0\0\0", B),
    ("non_finite", b"s", b'{"source_id": "s", "values": [1e39' + b", 0" * (N - 1) + b"]}", J),
    ("non_finite", b"s", _f32((3, float("nan"))), B),
    ("non_finite", b"s", _f32((0, float("inf"))), B),
    ("missing_key", None, _f32(), B),
    ("missing_key", b"", _f32(), B),
    # where simdjson (the decoder's fast path) and orjson disagree, orjson's verdict holds
    ("invalid_json", b"s", b"\xef\xbb\xbf" + _j({"source_id": "s", "values": GOOD}), J),  # byte order mark
    ("wrong_type", b"s", b'{"source_id": "s", "values": ' + _j(GOOD) + b', "values": "x"}', J),  # last wins
    ("wrong_type", b"s", _j({"source_id": "s", "values": GOOD, "beat_time": {"ms": 1}}), J),
    ("invalid_json", b"s", b'{"source_id": "\\ud800", "values": ' + _j(GOOD) + b"}", J),  # lone surrogate
    ("invalid_json", b"s", b'{"source_id": "s", "values": [1' + b"0" * 400 + b", 0" * (N - 1) + b"]}", J),
]
