"""Outputs of a scored batch: anomaly events, score records and dead letters, as ready-to-send records."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import orjson

from schemas import messages as m
from schemas.messages import iso_time
from worker._events import anomaly_events
from worker.decode import BeatMeta, Reject
from worker.model import Scores

ERROR_WINDOW = 10  # samples per window when locating where a beat's error concentrates


class OutRecord(NamedTuple):
    """One record to produce. A tuple: worker._events builds the anomaly events' records in C."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Outputs:
    records: list[OutRecord]
    anomaly: np.ndarray  # bool [N], aligned with the batch's meta


class OutputBuilder:
    def __init__(
        self, anomaly_topic: str, scores_topic: str, dlq_topic: str, group_id: str, client_id: str
    ) -> None:
        self.anomaly_topic = anomaly_topic
        self.scores_topic = scores_topic
        self.dlq_topic = dlq_topic
        self._dlq_static = [(m.DLQ_CONSUMER_GROUP, group_id.encode()), (m.DLQ_WORKER, client_id.encode())]
        self._event_headers = m.beat_headers(m.EVENT_CONTENT_TYPE)
        self._score_headers = m.beat_headers(m.SCORE_CONTENT_TYPE)

    def build(
        self,
        meta: list[BeatMeta],
        scores: Scores | None,
        threshold: float,
        model_version: str,
        rejects: list[Reject],
    ) -> Outputs:
        records: list[OutRecord] = []
        anomaly = np.zeros(len(meta), dtype=bool)
        if scores is not None and meta:
            anomaly = scores.score > np.float32(threshold)
            records.extend(self._anomalies(meta, scores, anomaly, threshold, model_version))
            if self.scores_topic:
                records.extend(self._scores(meta, scores.score, anomaly, threshold, model_version))
        records.extend(self.dead_letter(r) for r in rejects)
        return Outputs(records, anomaly)

    def _anomalies(
        self, meta: list[BeatMeta], scores: Scores, anomaly: np.ndarray, threshold: float, version: str
    ) -> list[OutRecord]:
        rows = np.flatnonzero(anomaly)
        if rows.size == 0:
            return []
        errors = scores.sample_error[rows].astype(np.float64)
        starts = np.arange(0, errors.shape[1], ERROR_WINDOW)
        windows = np.add.reduceat(errors, starts, axis=1)
        best = windows.argmax(axis=1)
        totals = errors.sum(axis=1)
        with np.errstate(invalid="ignore"):  # an overflowed (infinite) error: no share, null in the event
            share = np.divide(
                windows[np.arange(len(rows)), best], totals, out=np.zeros(len(rows)), where=totals > 0
            )
        peak = errors.argmax(axis=1)
        peak_error = errors[np.arange(len(rows)), peak]
        window_start = starts[best]
        score = scores.score[rows].astype(np.float64)
        ratio = score / threshold
        chosen = [meta[r] for r in rows.tolist()]
        shared = b',"detected_at":%s,"threshold":%s,"model_version":%s' % (
            orjson.dumps(iso_time(int(time.time() * 1000))),
            orjson.dumps(threshold),
            orjson.dumps(version),
        )
        return anomaly_events(
            chosen,
            *(
                orjson.dumps(column, option=orjson.OPT_SERIALIZE_NUMPY)
                for column in (score, ratio, share, peak_error)
            ),
            window_start,
            np.minimum(window_start + ERROR_WINDOW, errors.shape[1]),
            peak,
            m.severities(ratio),
            shared,
            m.EVENT_ID_NAMESPACE.bytes,
            OutRecord,
            self.anomaly_topic,
            self._event_headers,
        )

    def _scores(
        self, meta: list[BeatMeta], score: np.ndarray, anomaly: np.ndarray, threshold: float, version: str
    ) -> list[OutRecord]:
        out = []
        beat_times = [iso_time(b.beat_time_ms) for b in meta]
        for beat, event_id, value, flag, beat_time in zip(
            meta, _event_ids(meta), score.tolist(), anomaly.tolist(), beat_times, strict=True
        ):
            record = beat.record
            body: dict[str, Any] = {
                "event_id": event_id,
                "source_id": beat.source_id,
                "beat_time": beat_time,
                "score": value,
                "threshold": threshold,
                "anomaly": flag,
                "model_version": version,
                "input": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
            }
            if beat.beat_id is not None:
                body["beat_id"] = beat.beat_id
            if beat.label is not None:
                body["label"] = beat.label
            out.append(OutRecord(self.scores_topic, beat.key, orjson.dumps(body), self._score_headers))
        return out

    def dead_letter(self, reject: Reject) -> OutRecord:
        """The input record untouched (key, value, headers, timestamp) plus the ``ecg.dlq.*`` headers."""
        record = reject.record
        headers = list(record.headers or [])
        headers += [
            (m.DLQ_REASON, reject.reason.value.encode()),
            (m.DLQ_MESSAGE, reject.message.encode()),
            (m.DLQ_TOPIC, record.topic.encode()),
            (m.DLQ_PARTITION, str(record.partition).encode()),
            (m.DLQ_OFFSET, str(record.offset).encode()),
            (m.DLQ_TIMESTAMP, str(record.timestamp).encode()),
            *self._dlq_static,
            (m.DLQ_FAILED_AT, iso_time(int(time.time() * 1000)).encode()),
        ]
        return OutRecord(self.dlq_topic, record.key, record.value, headers, record.timestamp)


def _event_ids(meta: list[BeatMeta]) -> list[str]:
    return m.event_ids([(b.record.topic, b.record.partition, b.record.offset) for b in meta])
