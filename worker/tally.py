"""What a published batch adds to the metrics once its outputs are safe, and the dead-letter log line.

A batch awaiting acknowledgement keeps only its :class:`Tally` (not its records or outputs): with
four full batches in flight, that was the difference between 140 and ~120 MB while a JSON backlog
drains.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ecg_anomaly.schemas.messages import CLOSE_REASONS
from ecg_anomaly.worker.episodes.store import CLOSED, OPENED, UPDATED
from ecg_anomaly.worker.metrics import WorkerMetrics, observe_many
from ecg_anomaly.worker.pipeline import ScoredBatch
from ecg_anomaly.worker.records import Record

log = logging.getLogger("ecg_anomaly.worker.loop")

DEAD_LETTER_LOG_SECONDS = 10.0  # at most one "records dead-lettered" line this often


@dataclass(slots=True)
class Tally:
    consumed: int
    reasons: list[str]  # the dead letters' reason codes
    reduced: list[str]  # why each reduced dead letter was reduced
    first_reject: Record | None
    score: np.ndarray | None  # float32 [scored beats]
    anomaly: np.ndarray  # bool [scored beats]
    timestamps: np.ndarray  # float64 epoch ms of each scored beat's record
    labels: list[tuple[str, bool]]  # (ground-truth label, flagged) of the labelled beats
    polled_at: float  # epoch seconds: taken from the client
    built_at: float  # epoch seconds: outputs built
    transitions: dict[str, int] | None  # episode transitions (kinds and close reasons), episodes on

    @classmethod
    def of(cls, batch: ScoredBatch) -> Tally:
        outputs = batch.outputs
        decoded, anomaly = outputs.batch, outputs.anomaly
        rejects, labels = decoded.rejects, decoded.labels
        stamps = decoded.records.timestamp
        return cls(
            batch.consumed,
            [r.reason.value for r in rejects],
            outputs.reduced,
            rejects[0].record if rejects else None,
            outputs.score,
            anomaly,
            np.fromiter((stamps[r] for r in decoded.rows), dtype=np.float64, count=len(decoded.rows)),
            (
                [(label, f) for label, f in zip(labels, anomaly.tolist(), strict=True) if label is not None]
                if labels.count(None) != len(labels)
                else []
            ),
            batch.polled_at,
            batch.built_at,
            None if batch.episodes is None else batch.episodes.counts,
        )


class Counter:
    """Counts finished batches into the metrics (``count`` is the delivery strategies' ``done``)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self._dead_letters = _DeadLetterLog()

    def count(self, t: Tally) -> None:
        m, now = self.metrics, time.time()
        m.consumed.inc(t.consumed)
        m.batches.inc()
        m.last_batch.set(now)
        for reason in t.reasons:
            m.dead_letters.labels(reason).inc()
        for cause in t.reduced:
            m.reduced_dead_letters.labels(cause).inc()
        if t.first_reject is not None:
            self._dead_letters.add(t.reasons, t.first_reject)
        if t.transitions is not None and any(t.transitions.values()):
            self._transitions(t.transitions)
        if t.score is None:
            return
        n_anomaly = int(np.count_nonzero(t.anomaly))
        m.scored_anomaly.inc(n_anomaly)
        m.scored_normal.inc(len(t.anomaly) - n_anomaly)
        m.batch_size.observe(len(t.anomaly))
        observe_many(m.reconstruction_error, t.score.astype(np.float64))
        observe_many(m.latency, np.maximum(now * 1000 - t.timestamps, 0.0) / 1000)
        observe_many(m.fetch_latency, np.maximum(t.polled_at * 1000 - t.timestamps, 0.0) / 1000)
        m.process_latency.observe(max(t.built_at - t.polled_at, 0.0))
        m.publish_latency.observe(max(now - t.built_at, 0.0))
        for label, flag in t.labels:
            m.labelled.labels(label, "anomaly" if flag else "normal").inc()

    def _transitions(self, counts: dict[str, int]) -> None:
        m = self.metrics
        closed = 0
        for reason in CLOSE_REASONS:
            closed += counts[reason]
            m.episodes_closed.labels(reason).inc(counts[reason])
        for kind, n in ((OPENED, counts[OPENED]), (UPDATED, counts[UPDATED]), (CLOSED, closed)):
            m.episode_transitions.labels(kind).inc(n)


class _DeadLetterLog:
    """One log line per :data:`DEAD_LETTER_LOG_SECONDS` about dead letters, not one per batch.

    The line names the first dead-lettered record since the previous line and counts them by reason:
    a stream of bad input (or a topic limit that dead-letters every beat for a while) is a few lines
    a minute, not several a second. The metrics count every one.
    """

    def __init__(self) -> None:
        self._next = 0.0
        self._counts: dict[str, int] = {}
        self._first: Record | None = None

    def add(self, reasons: list[str], first: Record) -> None:
        if self._first is None:
            self._first = first
        for reason in reasons:
            self._counts[reason] = self._counts.get(reason, 0) + 1
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + DEAD_LETTER_LOG_SECONDS
        record, counts = self._first, self._counts
        self._first, self._counts = None, {}
        log.info(
            "records dead-lettered",
            extra={
                "count": sum(counts.values()),
                "by_reason": counts,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        )
