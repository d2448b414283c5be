"""All the records a scored batch produces, each checked against what its topic accepts.

Anomaly events and score records (:mod:`ecg_anomaly.worker.events`) and dead letters
(:mod:`ecg_anomaly.worker.dead_letters`). A beat whose event or score record its topic would refuse
(:mod:`ecg_anomaly.worker.topic_limits`) is dead-lettered as ``output_too_large`` instead, so every
input still ends in exactly one outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.schemas.messages import DeadLetterReason
from ecg_anomaly.worker.dead_letters import DeadLetters
from ecg_anomaly.worker.decode import DecodedBatch, Reject
from ecg_anomaly.worker.events import OutRecord, anomaly_events, score_records
from ecg_anomaly.worker.model import Scores
from ecg_anomaly.worker.topic_limits import OutputLimits, record_bytes


@dataclass
class Outputs:
    """A batch's records to produce, and the beats' final outcomes (what the metrics count)."""

    records: list[OutRecord]
    batch: DecodedBatch  # the scored beats (an output its topic would refuse moves a beat to the rejects)
    score: np.ndarray | None  # float32 [len(batch)]; None when nothing was scored
    anomaly: np.ndarray  # bool [len(batch)]
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

    def build(self, batch: DecodedBatch, scores: Scores | None, threshold: float, version: str) -> Outputs:
        """Events, score records and dead letters; raises ``Unpublishable`` if a dead letter cannot fit."""
        if scores is not None and len(batch):
            unscorable = np.flatnonzero(~np.isfinite(scores.score)).tolist()
            if unscorable:  # NaN would pass as normal and an infinite score is no JSON number
                why = "the model's score is not finite: values far outside anything it was trained on"
                return self._without(
                    batch,
                    scores,
                    {i: (DeadLetterReason.NON_FINITE, why) for i in unscorable},
                    threshold,
                    version,
                )
        records: list[OutRecord] = []
        anomaly = np.zeros(len(batch), dtype=bool)
        score = None
        if scores is not None and len(batch):
            anomaly = scores.score > np.float32(threshold)
            flagged = np.flatnonzero(anomaly)
            events = anomaly_events(
                batch, scores, flagged, threshold, version, self.anomaly_topic, self._event_headers
            )
            scored = (
                score_records(
                    batch, scores.score, anomaly, threshold, version, self.scores_topic, self._score_headers
                )
                if self.scores_topic
                else []
            )
            too_large = self._too_large(events, flagged, scored)
            if too_large:  # rare: rebuild without those beats, which are dead-lettered instead
                rejects = {i: (DeadLetterReason.OUTPUT_TOO_LARGE, why) for i, why in too_large.items()}
                return self._without(batch, scores, rejects, threshold, version)
            records.extend(events)
            records.extend(scored)
            score = scores.score
        now_ms = int(time.time() * 1000)
        dlq_limits = self.limits[self.dead_letters.topic]
        reduced = []
        for reject in batch.rejects:
            record, why = self.dead_letters.build(reject, dlq_limits, now_ms)
            records.append(record)
            if why is not None:
                reduced.append(why)
        return Outputs(records, batch, score, anomaly, reduced)

    def _without(
        self,
        batch: DecodedBatch,
        scores: Scores,
        rejects: dict[int, tuple[DeadLetterReason, str]],
        threshold: float,
        version: str,
    ) -> Outputs:
        """The outputs with the beats in ``rejects`` (index → reason, message) dead-lettered instead."""
        keep = np.ones(len(batch), dtype=bool)
        keep[list(rejects)] = False
        rest = batch.keep(keep)
        moved = [Reject(batch.records.record(batch.rows[i]), *rejects[i]) for i in rejects]
        rest.rejects = sorted([*batch.rejects, *moved], key=lambda r: (r.record.partition, r.record.offset))
        return self.build(rest, Scores(scores.score[keep], scores.sample_error[keep]), threshold, version)

    def _too_large(
        self, events: list[OutRecord], flagged: np.ndarray, scored: list[OutRecord]
    ) -> dict[int, str]:
        """Beat index → why, for beats whose event or score record its topic would refuse."""
        found: dict[int, str] = {}
        for records, beats, topic, what in (
            (events, flagged.tolist(), self.anomaly_topic, "anomaly event"),
            (scored, range(len(scored)), self.scores_topic, "score record"),
        ):
            if not records:
                continue
            limit = self.limits[topic]
            room = limit.max_message_bytes - record_bytes(None, None, records[0].headers)  # same headers
            if max(len(r.key or b"") + len(r.value or b"") for r in records) <= room:
                continue
            for beat, r in zip(beats, records, strict=True):
                size = record_bytes(r.key, r.value, r.headers)
                if not limit.fits(size) and beat not in found:
                    found[beat] = (
                        f"its {what} would be {size:,} bytes, over what {topic} accepts ({limit.describe()})"
                    )
        return found
