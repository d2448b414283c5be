"""Anomaly events and score records of a scored batch, as ready-to-send records.

The documents follow ``anomaly_event.schema.json`` and ``score.schema.json``. What is per batch
(which beats, the error windows, the severities) is computed with numpy; each field's text is a
column built in one pass (:mod:`ecg_anomaly.worker.columns`); each document is then one bytes
template filled in from the columns.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from itertools import repeat
from typing import NamedTuple, TypeVar

import numpy as np
import orjson

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker import columns as C
from ecg_anomaly.worker.decode import DecodedBatch
from ecg_anomaly.worker.model import Scores

ERROR_WINDOW = 10  # samples per window when locating where a beat's error concentrates

_EVENT = (
    b'%s,"source_id":%s,"score":%s,"ratio":%s,"severity":"%s"%s,'
    b'"input":{"topic":%s,"partition":%d,"offset":%d,"timestamp":%d},'
    b'"error_location":{"window_start":%d,"window_end":%d,"window_share":%s,"peak_sample":%d,'
    b'"peak_error":%s}%s}'
)
_SCORE = (
    b'%s,"source_id":%s,"score":%s,"threshold":%s,"anomaly":%s,'
    b'"model_version":%s,"input":{"topic":%s,"partition":%d,"offset":%d}%s}'
)
_FLAGS = (b"false", b"true")
_SEVERITIES = [name.encode() for name in m.SEVERITIES]
T = TypeVar("T")


class OutRecord(NamedTuple):
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int = 0  # 0: the producer stamps it
    partition: int = -1  # -1: the partitioner picks it (by key); the episode changelog names its own


def _extras(beat_ids: list[str | None], labels: list[str | None]) -> list[bytes]:
    """The optional ``beat_id`` and ``label`` fields of each beat, with their leading commas."""
    if not any(beat_ids) and not any(labels):  # binary beats, and JSON beats without them
        return [b""] * len(beat_ids)
    out = []
    for beat_id, label in zip(beat_ids, labels, strict=True):
        extra = b""
        if beat_id is not None:
            extra += b',"beat_id":' + orjson.dumps(beat_id)
        if label is not None:
            extra += b',"label":' + orjson.dumps(label)
        out.append(extra)
    return out


def _severities(ratios: np.ndarray) -> list[bytes]:
    """:func:`ecg_anomaly.schemas.messages.severity` of each ratio, as bytes."""
    return [_SEVERITIES[i] for i in m.severity_bands(ratios).tolist()]


def _pick(items: Sequence[T], indices: list[int]) -> list[T]:
    return [items[i] for i in indices]


def anomaly_events(
    batch: DecodedBatch,
    scores: Scores,
    flagged: np.ndarray,
    threshold: float,
    version: str,
    topic: str,
    headers: list[tuple[str, bytes]],
) -> list[OutRecord]:
    """One event per flagged beat (``flagged``: indices into the batch's beats, ascending)."""
    if flagged.size == 0:
        return []
    errors = scores.sample_error[flagged].astype(np.float64)
    starts = np.arange(0, errors.shape[1], ERROR_WINDOW)
    windows = np.add.reduceat(errors, starts, axis=1)
    best = windows.argmax(axis=1)
    totals = errors.sum(axis=1)
    n = len(flagged)
    with np.errstate(invalid="ignore"):  # an overflowed (infinite) error: no share, null in the event
        share = np.divide(windows[np.arange(n), best], totals, out=np.zeros(n), where=totals > 0)
    peak = errors.argmax(axis=1)
    window_start = starts[best]
    score = scores.score[flagged].astype(np.float64)
    ratio = score / threshold
    beats = flagged.tolist()
    records = batch.records
    rows = _pick(batch.rows, beats)
    topics = _pick(records.topic, rows)
    partitions = _pick(records.partition, rows)
    offsets = _pick(records.offset, rows)
    source_ids = _pick(batch.source_ids, beats)
    shared = b',"detected_at":%s,"threshold":%s,"model_version":%s' % (
        orjson.dumps(m.iso_time(int(time.time() * 1000))),
        orjson.dumps(threshold),
        orjson.dumps(version),
    )
    documents = [
        _EVENT % fields
        for fields in zip(
            C.heads(topics, partitions, offsets, _pick(batch.beat_times, beats)),
            C.strings(source_ids),
            C.numbers(score),
            C.numbers(ratio),
            _severities(ratio),
            [shared] * n,
            C.repeated_strings(topics),
            partitions,
            offsets,
            _pick(records.timestamp, rows),
            window_start.tolist(),
            np.minimum(window_start + ERROR_WINDOW, errors.shape[1]).tolist(),
            C.numbers(share),
            peak.tolist(),
            C.numbers(errors[np.arange(n), peak]),
            _extras(_pick(batch.beat_ids, beats), _pick(batch.labels, beats)),
            strict=True,
        )
    ]
    return _records(topic, source_ids, documents, headers)


def score_records(
    batch: DecodedBatch,
    score: np.ndarray,
    anomaly: np.ndarray,
    threshold: float,
    version: str,
    topic: str,
    headers: list[tuple[str, bytes]],
) -> list[OutRecord]:
    """One score record per beat."""
    records = batch.records
    n = len(batch)
    topics = _pick(records.topic, batch.rows)
    partitions = _pick(records.partition, batch.rows)
    offsets = _pick(records.offset, batch.rows)
    documents = [
        _SCORE % fields
        for fields in zip(
            C.heads(topics, partitions, offsets, batch.beat_times),
            C.strings(batch.source_ids),
            C.numbers(score.astype(np.float64)),
            [orjson.dumps(threshold)] * n,
            [_FLAGS[flag] for flag in anomaly.tolist()],
            [orjson.dumps(version)] * n,
            C.repeated_strings(topics),
            partitions,
            offsets,
            _extras(batch.beat_ids, batch.labels),
            strict=True,
        )
    ]
    return _records(topic, batch.source_ids, documents, headers)


def _records(
    topic: str, source_ids: list[str], documents: list[bytes], headers: list[tuple[str, bytes]]
) -> list[OutRecord]:
    """The output records, keyed by source id (``tuple.__new__`` in C: a named tuple's own
    constructor is a Python call per record)."""
    fields = zip(
        repeat(topic), [s.encode() for s in source_ids], documents, repeat(headers), repeat(0), repeat(-1)
    )
    return list(map(partial(tuple.__new__, OutRecord), fields))
