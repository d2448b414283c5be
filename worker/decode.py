"""Decode and validate a poll's records into one float32 batch, in input order.

Every record ends as exactly one of: a row of the batch (with its metadata) or a :class:`Reject`
carrying a :class:`~ecg_anomaly.schemas.messages.DeadLetterReason`. The per-record Python work is
a few checks; numbers are converted and checked for finiteness once per batch with numpy. JSON
beats are read by :mod:`ecg_anomaly.worker.json_beats`; a poll of nothing but plain binary beats
(a backlog of one producer's) is checked a column at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecg_anomaly.schemas.messages import (
    BINARY_CONTENT_TYPE,
    CONTENT_TYPE_HEADER,
    JSON_CONTENT_TYPE,
    MAX_BEAT_TIME_MS,
    DeadLetterReason,
)
from ecg_anomaly.worker.json_beats import NON_FINITE, Invalid, JsonBeats, record_time_ms
from ecg_anomaly.worker.records import Record, Records

FLOAT32_MAX = float(np.finfo(np.float32).max)  # larger magnitudes are non_finite (the schema's bound too)


@dataclass(frozen=True, slots=True)
class Reject:
    record: Record
    reason: DeadLetterReason
    message: str


@dataclass
class DecodedBatch:
    """A poll's records decoded: the beats to score, in input order, and the rejected records.

    ``rows`` maps each beat to its record in ``records``; the other lists are aligned with the beats.
    """

    records: Records
    beats: np.ndarray  # float32 [len(rows), input_length]
    rows: list[int]
    source_ids: list[str]
    beat_times: list[int]  # epoch ms
    beat_ids: list[str | None]
    labels: list[str | None]
    rejects: list[Reject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def keep(self, mask: np.ndarray) -> DecodedBatch:
        """The beats where ``mask`` is True (the rejects unchanged)."""
        kept = np.flatnonzero(mask).tolist()
        return DecodedBatch(
            self.records,
            self.beats[mask],
            [self.rows[i] for i in kept],
            [self.source_ids[i] for i in kept],
            [self.beat_times[i] for i in kept],
            [self.beat_ids[i] for i in kept],
            [self.labels[i] for i in kept],
            self.rejects,
        )


class BeatDecoder:
    """Turns a poll's records into a batch (one decoder per worker: it holds a simdjson parser).

    Each batch gets its own array: the pipeline scores a batch on another thread while it decodes
    the next one.
    """

    def __init__(self, input_length: int, max_record_bytes: int, max_key_bytes: int) -> None:
        self.input_length = input_length
        self.max_record_bytes = max_record_bytes
        self.max_key_bytes = max_key_bytes
        self._binary_bytes = 4 * input_length
        self._json = JsonBeats(input_length, max_key_bytes)

    def decode(self, records: Records) -> DecodedBatch:
        plain = self._plain_binary(records)
        if plain is not None:
            return plain
        n = len(records)
        json_rows: list[int] = []
        json_values: list[Any] = []  # per JSON beat, its values as a buffer of float64
        binary_rows: list[int] = []
        rows: list[int] = []
        source_ids: list[str] = []
        beat_times: list[int] = []
        beat_ids: list[str | None] = []
        labels: list[str | None] = []
        rejects: list[Reject] = []
        for i in range(n):
            value, key = records.value[i], records.key[i]
            try:
                content_type = _content_type(records.headers[i])
                if not value:
                    raise Invalid(DeadLetterReason.EMPTY_VALUE, "record value is null or empty")
                if len(value) > self.max_record_bytes:
                    raise Invalid(
                        DeadLetterReason.OVERSIZED,
                        f"value is {len(value)} bytes, more than --max-record-bytes={self.max_record_bytes}",
                    )
                if key is not None and len(key) > self.max_key_bytes:
                    raise Invalid(
                        DeadLetterReason.OVERSIZED_KEY,
                        f"record key is {len(key)} bytes, more than --max-key-bytes={self.max_key_bytes}",
                    )
                if content_type is None or content_type == JSON_CONTENT_TYPE:
                    values, source_id, beat_time, beat_id, label = self._json.read(
                        value, records.timestamp[i]
                    )
                    json_rows.append(len(rows))
                    json_values.append(values)
                elif content_type == BINARY_CONTENT_TYPE:
                    source_id, beat_time = self._binary(value, key, records.timestamp[i])
                    beat_id = label = None
                    binary_rows.append(len(rows))
                else:
                    raise Invalid(
                        DeadLetterReason.UNKNOWN_CONTENT_TYPE,
                        f"content-type {content_type!r} is not {JSON_CONTENT_TYPE} or {BINARY_CONTENT_TYPE}",
                    )
            except Invalid as bad:
                rejects.append(Reject(records.record(i), bad.reason, bad.message))
                continue
            rows.append(i)
            source_ids.append(source_id)
            beat_times.append(beat_time)
            beat_ids.append(beat_id)
            labels.append(label)
        beats = np.empty((len(rows), self.input_length), dtype=np.float32)
        if json_rows:
            values = np.frombuffer(b"".join(json_values), dtype=np.float64).reshape(len(json_rows), -1)
            with np.errstate(over="ignore"):  # beyond float32 becomes inf: rejected as non_finite below
                beats[json_rows] = values
            # Just above the float32 maximum a value rounds down to it instead of overflowing; the
            # schema's bound is the maximum itself, so such a row is made non-finite here too.
            over = np.abs(values).max(axis=1) > FLOAT32_MAX
            if over.any():
                beats[np.array(json_rows)[over]] = np.inf
        if binary_rows:
            binary = b"".join(records.value[rows[r]] for r in binary_rows)  # type: ignore[misc]
            beats[binary_rows] = np.frombuffer(binary, dtype="<f4").reshape(len(binary_rows), -1)
        batch = DecodedBatch(records, beats, rows, source_ids, beat_times, beat_ids, labels, rejects)
        return _without_non_finite(batch)

    def _plain_binary(self, records: Records) -> DecodedBatch | None:
        """A poll of nothing but plain binary beats (a backlog of one producer's), checked column-wise.

        All or nothing: any other record (JSON, other headers, a bad beat) sends the whole poll
        through the record-by-record path, which names the dead-letter reasons. Plain: the headers
        are exactly ``content-type: application/x-ecg-beat-f32le``, the value one beat, the key
        UTF-8 within ``--max-key-bytes`` and the timestamp a beat time (the checks of
        :meth:`_binary`, tested to agree).
        """
        if self._binary_bytes > self.max_record_bytes or not len(records):
            return None
        size, limit = self._binary_bytes, self.max_key_bytes
        if any(h != _PLAIN_BINARY_HEADERS for h in records.headers):
            return None
        if any(v is None or len(v) != size for v in records.value):
            return None
        if any(not k or len(k) > limit for k in records.key):
            return None
        stamps = records.timestamp
        if min(stamps) < 0 or max(stamps) > MAX_BEAT_TIME_MS:
            return None
        try:
            source_ids = [k.decode() for k in records.key]  # type: ignore[union-attr]
        except UnicodeDecodeError:
            return None
        n = len(records)
        beats = np.frombuffer(b"".join(records.value), dtype="<f4").reshape(n, -1)  # type: ignore[arg-type]
        nones: list[str | None] = [None] * n
        batch = DecodedBatch(records, beats, list(range(n)), source_ids, list(stamps), nones, nones[:], [])
        return _without_non_finite(batch)

    def _binary(self, value: bytes, key: bytes | None, timestamp: int) -> tuple[str, int]:
        if len(value) != self._binary_bytes:
            raise Invalid(
                DeadLetterReason.WRONG_LENGTH,
                f"binary beat is {len(value)} bytes, expected {self._binary_bytes} "
                f"({self.input_length} float32)",
            )
        if not key:
            raise Invalid(DeadLetterReason.MISSING_KEY, "binary beat without a record key (its source id)")
        try:
            source_id = key.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(DeadLetterReason.UNDECODABLE_BYTES, "record key is not UTF-8") from None
        return source_id, record_time_ms(timestamp)


def _without_non_finite(batch: DecodedBatch) -> DecodedBatch:
    """Beats with NaN, infinity or values beyond float32 become ``non_finite`` rejects (input order)."""
    finite = np.isfinite(batch.beats).all(axis=1)
    if finite.all():
        return batch
    rejects = batch.rejects + [
        Reject(batch.records.record(batch.rows[i]), DeadLetterReason.NON_FINITE, NON_FINITE)
        for i in np.flatnonzero(~finite).tolist()
    ]
    rejects.sort(key=lambda r: (r.record.partition, r.record.offset))
    kept = batch.keep(finite)
    kept.rejects = rejects
    return kept


_BINARY_BYTES = BINARY_CONTENT_TYPE.encode()
_PLAIN_BINARY_HEADERS = [(CONTENT_TYPE_HEADER, _BINARY_BYTES)]
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
