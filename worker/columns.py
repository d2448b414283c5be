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
_DIGEST = type(hashlib.sha1()).digest
_HEAD = b'{"event_id":"%s","beat_time":"%s"'
_HEAD_TEMPLATE = np.frombuffer(_HEAD % (b"-" * 36, b"-" * 24), dtype=np.uint8)
_ID_AT = len(b'{"event_id":"')
# where the 32 hex digits of the id go (between its dashes), and the 24 characters of the time
_HEAD_ID = [_ID_AT + i for i in range(36) if i not in (8, 13, 18, 23)]
_TIME_AT = _ID_AT + 36 + len(b'","beat_time":"')
_HEAD_TIME = list(range(_TIME_AT, _TIME_AT + 24))


def numbers(values: np.ndarray) -> list[bytes]:
    """Each number's JSON text (NaN and infinity become null, as orjson writes them)."""
    if values.size == 0:
        return []
    return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")


def strings(texts: Sequence[str]) -> list[bytes]:
    """Each text as a JSON string (quoted and escaped)."""
    return [orjson.dumps(t) for t in texts]


def repeated_strings(texts: Sequence[str]) -> list[bytes]:
    """:func:`strings` of a column with a few distinct values (topics): each one quoted once."""
    quoted = {t: orjson.dumps(t) for t in set(texts)}
    return [quoted[t] for t in texts]


def heads(
    topics: Sequence[str], partitions: Sequence[int], offsets: Sequence[int], epoch_ms: Sequence[int]
) -> list[bytes]:
    """Each document's opening: ``{"event_id":"<id>","beat_time":"<time>"`` (tested equal to
    :func:`ecg_anomaly.schemas.messages.event_id` and :func:`~ecg_anomaly.schemas.messages.iso_time`).

    Both fields have a fixed width, so a large batch writes all of them into one byte matrix: a
    single slice per document instead of two columns to slice and fill into the template.
    """
    n = len(offsets)
    if n < VECTOR_FROM:
        ids = m.event_ids(list(zip(topics, partitions, offsets, strict=True)))
        return [_HEAD % (i.encode(), m.iso_time(ms).encode()) for i, ms in zip(ids, epoch_ms, strict=True)]
    text = np.tile(_HEAD_TEMPLATE, (n, 1))
    text[:, _HEAD_ID] = _id_digits(topics, partitions, offsets)
    text[:, _HEAD_TIME] = _iso_digits(np.array(epoch_ms, dtype=np.int64))
    flat = text.tobytes()
    width = _HEAD_TEMPLATE.size
    return [flat[i : i + width] for i in range(0, width * n, width)]


def _id_digits(topics: Sequence[str], partitions: Sequence[int], offsets: Sequence[int]) -> np.ndarray:
    """The 32 hex digits of each input's UUIDv5, uint8 ``[n, 32]``: one SHA-1 per input, the rest numpy."""
    prefixes = {t: m.event_id_prefix(t) for t in set(topics)}
    sha1 = hashlib.sha1
    names = [b"%s%d/%d" % (prefixes[t], p, o) for t, p, o in zip(topics, partitions, offsets, strict=True)]
    digests = b"".join(map(_DIGEST, map(sha1, names)))  # no bytecode per input
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(len(offsets), 20)[:, :16].copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50  # version 5
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # the RFC 4122 variant
    digits = np.empty((len(offsets), 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[raw >> 4]
    digits[:, 1::2] = _HEX[raw & 15]
    return digits


def _iso_digits(epoch_ms: np.ndarray) -> np.ndarray:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` of each, uint8 ``[n, 24]``; numpy formats each distinct second once
    (a batch's beats fall in a few seconds)."""
    seconds, inverse = np.unique(epoch_ms // 1000, return_inverse=True)
    dates = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").astype("S19")
    text = np.empty((epoch_ms.size, 24), dtype=np.uint8)
    text[:, :19] = dates.view(np.uint8).reshape(-1, 19)[inverse]
    millis = epoch_ms % 1000
    text[:, 19] = ord(".")
    text[:, 20] = ord("0") + millis // 100
    text[:, 21] = ord("0") + millis // 10 % 10
    text[:, 22] = ord("0") + millis % 10
    text[:, 23] = ord("Z")
    return text
