"""A batch's output fields as columns of JSON text, each built in one pass over the batch.

An event is one bytes template filled from these columns; what costs is whatever runs once per
event in Python, so each column is made by a single C-level call where one exists (``orjson`` for
numbers, numpy for event ids and ISO times of a large batch) and by a short comprehension
otherwise. For a live feed's few beats per batch numpy's fixed cost (tens of µs) is more than the
per-item way, so small batches take that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import orjson

from ecg_anomaly.schemas import messages as m

VECTOR_FROM = 64  # items; fewer are formatted one by one

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_ID_DIGITS = [i for i in range(36) if i not in (8, 13, 18, 23)]  # where the 32 hex digits go


def numbers(values: np.ndarray) -> list[bytes]:
    """Each number's JSON text (NaN and infinity become null, as orjson writes them)."""
    if values.size == 0:
        return []
    return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")


def strings(texts: Sequence[str]) -> list[bytes]:
    """Each text as a JSON string (quoted and escaped)."""
    return [orjson.dumps(t) for t in texts]


def event_ids(topics: Sequence[str], partitions: Sequence[int], offsets: Sequence[int]) -> list[bytes]:
    """:func:`ecg_anomaly.schemas.messages.event_id` of each input, as ASCII bytes (tested equal)."""
    if len(offsets) < VECTOR_FROM:
        return [i.encode() for i in m.event_ids(list(zip(topics, partitions, offsets, strict=True)))]
    prefixes = {t: m.EVENT_ID_NAMESPACE.bytes + t.encode() + b"/" for t in set(topics)}
    sha1 = hashlib.sha1
    digests = b"".join(
        [
            sha1(prefixes[t] + b"%d/%d" % (p, o)).digest()
            for t, p, o in zip(topics, partitions, offsets, strict=True)
        ]
    )
    n = len(offsets)
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(n, 20)[:, :16].copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50  # version 5
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # the RFC 4122 variant
    digits = np.empty((n, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[raw >> 4]
    digits[:, 1::2] = _HEX[raw & 15]
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, _ID_DIGITS] = digits
    flat = text.tobytes()
    return [flat[i : i + 36] for i in range(0, 36 * n, 36)]


def iso_times(epoch_ms: Sequence[int]) -> list[bytes]:
    """:func:`ecg_anomaly.schemas.messages.iso_time` of each, as ASCII bytes (tested equal)."""
    if len(epoch_ms) < VECTOR_FROM:
        return [m.iso_time(ms).encode() for ms in epoch_ms]
    text = np.datetime_as_string(np.array(epoch_ms, dtype="datetime64[ms]"), unit="ms").astype("S23")
    return [t + b"Z" for t in text.tolist()]
