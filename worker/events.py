"""Outputs of a scored batch: anomaly events, score records and dead letters, as ready-to-send records."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.schemas.messages import DeadLetterReason, iso_time
from ecg_anomaly.worker._events import anomaly_events
from ecg_anomaly.worker.dead_letters import DeadLetters, OutRecord
from ecg_anomaly.worker.decode import BeatMeta, Reject
from ecg_anomaly.worker.model import Scores
from ecg_anomaly.worker.topic_limits import OutputLimits, record_bytes

ERROR_WINDOW = 10  # samples per window when locating where a beat's error concentrates

__all__ = ["OutRecord", "OutputBuilder", "Outputs"]


@dataclass
class Outputs:
    """A batch's records to produce, and the beats' final outcomes (which the metrics count)."""

    records: list[OutRecord]
    meta: list[BeatMeta]  # the scored beats (an output the topic would refuse moves its beat to rejects)
    score: np.ndarray | None  # float32 [len(meta)]
    anomaly: np.ndarray  # bool [len(meta)]
    rejects: list[Reject]
    reduced: list[str] = field(default_factory=list)  # why each reduced dead letter was reduced


class OutputBuilder:
    def __init__(
        self,
        anomaly_topic: str,
        scores_topic: str,
        dlq_topic: str,
        group_id: str,
        client_id: str,
        limits: OutputLimits,
    ) -> None:
        self.anomaly_topic = anomaly_topic
        self.scores_topic = scores_topic
        self.limits = limits
        self.dead_letters = DeadLetters(dlq_topic, group_id, client_id)
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
        """Events, score records and dead letters; raises ``Unpublishable`` if a dead letter cannot fit."""
        records: list[OutRecord] = []
        anomaly = np.zeros(len(meta), dtype=bool)
        score = None
        if scores is not None and meta:
            anomaly = scores.score > np.float32(threshold)
            events = self._anomalies(meta, scores, anomaly, threshold, model_version)
            scored = (
                self._scores(meta, scores.score, anomaly, threshold, model_version)
                if self.scores_topic
                else []
            )
            too_large = self._too_large(events, np.flatnonzero(anomaly), scored)
            if too_large:  # rare: rebuild without those beats, which are dead-lettered instead
                keep = np.array([i not in too_large for i in range(len(meta))])
                rejects = sorted(
                    [
                        *rejects,
                        *(
                            Reject(meta[i].record, DeadLetterReason.OUTPUT_TOO_LARGE, why)
                            for i, why in too_large.items()
                        ),
                    ],
                    key=lambda r: (r.record.partition, r.record.offset),
                )
                meta = [b for b, k in zip(meta, keep.tolist(), strict=True) if k]
                return self.build(
                    meta,
                    Scores(scores.score[keep], scores.sample_error[keep]),
                    threshold,
                    model_version,
                    rejects,
                )
            records.extend(events)
            records.extend(scored)
            score = scores.score
        now_ms = int(time.time() * 1000)
        dlq_limits = self.limits[self.dead_letters.topic]
        reduced = []
        for reject in rejects:
            record, why = self.dead_letters.build(reject, dlq_limits, now_ms)
            records.append(record)
            if why is not None:
                reduced.append(why)
        return Outputs(records, meta, score, anomaly, rejects, reduced)

    def _too_large(
        self, events: list[OutRecord], event_rows: np.ndarray, scored: list[OutRecord]
    ) -> dict[int, str]:
        """Beat index → why, for beats whose event or score record the topic would refuse."""
        found: dict[int, str] = {}
        for records, rows, topic, what in (
            (events, event_rows.tolist(), self.anomaly_topic, "anomaly event"),
            (scored, range(len(scored)), self.scores_topic, "score record"),
        ):
            if not records:
                continue
            limit = self.limits[topic]
            headers = records[0].headers  # the same for every record of a kind
            room = limit.max_message_bytes - record_bytes(None, None, headers)
            if max(len(r.key or b"") + len(r.value or b"") for r in records) <= room:
                continue
            for row, r in zip(rows, records, strict=True):
                size = record_bytes(r.key, r.value, r.headers)
                if not limit.fits(size) and row not in found:
                    found[row] = (
                        f"its {what} would be {size:,} bytes, over what {topic} accepts ({limit.describe()})"
                    )
        return found

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


def _event_ids(meta: list[BeatMeta]) -> list[str]:
    return m.event_ids([(b.record.topic, b.record.partition, b.record.offset) for b in meta])
