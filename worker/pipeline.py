"""The scoring pipeline: a poll's records → decoded beats → scores → the batch's output records.

It knows nothing about delivery: what it hands back (:class:`ScoredBatch`) is the records to
produce, the input offsets they cover and what the metrics will count once they are safe. With
episodes on, each finished batch also steps the episode store (in input order: batches are finished
in the order they were polled) and carries its alert records and changelog changes.

Scoring runs one batch ahead on a second thread: while onnxruntime scores batch N (it releases the
GIL), the caller publishes batch N-1. At most one batch waits there; :meth:`ScoringPipeline.flush`
finishes it (before the loop idles, before partitions move, before the drain) and
:meth:`ScoringPipeline.drop` forgets it when an earlier batch failed and the input is rewound. A
small batch (a live feed's few records per poll) is scored on the caller's thread and handed back
at once: handing it over cost more than scoring it, and on a trickle there is no next batch to
overlap with.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ecg_anomaly.worker.dead_letters import Unpublishable
from ecg_anomaly.worker.decode import BeatDecoder, DecodedBatch
from ecg_anomaly.worker.episodes.store import EpisodeStep, EpisodeStore
from ecg_anomaly.worker.inflight import Offsets
from ecg_anomaly.worker.metrics import WorkerMetrics
from ecg_anomaly.worker.model import Model, Scores
from ecg_anomaly.worker.outputs import OutputBuilder, Outputs
from ecg_anomaly.worker.records import Records

SCORE_AHEAD_FROM = 64  # beats; smaller batches are scored on the caller's thread


class BatchFailed(Exception):
    """A batch could not be brought to outputs: it is rewound (``rewind``) and processed again.

    ``stage`` is the ``ecg_processing_errors_total`` label: ``score`` (onnxruntime failed) or
    ``produce`` (not even a reduced dead letter fits the dead-letter topic).
    """

    def __init__(self, rewind: Offsets, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.rewind = rewind
        self.stage = stage


@dataclass(slots=True)
class ScoredBatch:
    """What publishing needs: the records, the input offsets they cover, and what to count after."""

    outputs: Outputs
    consumed: int  # input records, dead letters included
    first: Offsets  # per partition, the batch's first offset: where a rewind goes
    after: Offsets  # per partition, the offset after the batch: what a commit records
    polled_at: float  # epoch seconds its records were taken from the client
    built_at: float  # epoch seconds its outputs were built
    episodes: EpisodeStep | None = None  # its alert records are among the outputs' already


@dataclass(slots=True)
class _Pending:
    batch: DecodedBatch
    model: Model  # the model that scores it, even if a reload lands meanwhile
    scores: Future[Scores] | None  # None: nothing to score (every record rejected)
    consumed: int
    first: Offsets
    after: Offsets
    polled_at: float


class ScoringPipeline:
    def __init__(
        self,
        model: Model,
        decoder: BeatDecoder,
        outputs: OutputBuilder,
        metrics: WorkerMetrics,
        episodes: EpisodeStore | None = None,
    ) -> None:
        self.model = model
        self.decoder = decoder
        self.outputs = outputs
        self.episodes = episodes
        self._metrics = metrics
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="scoring")
        self._pending: _Pending | None = None

    def use(self, model: Model, decoder: BeatDecoder) -> None:
        """Score later batches with ``model`` (a hot reload); one already scoring keeps its own."""
        self.model, self.decoder = model, decoder

    @property
    def holding(self) -> bool:
        """A batch is being scored ahead and not yet handed back."""
        return self._pending is not None

    def submit(self, records: Records, polled_at: float) -> list[ScoredBatch]:
        """Start on ``records``; the batches ready to publish, in input order (the one before, this one).

        Raises :class:`BatchFailed` for a batch that cannot be finished; the caller rewinds it and
        drops (:meth:`drop`) what the pipeline still holds.
        """
        first, after = records.offsets()
        batch = self.decoder.decode(records)  # every record gets a reason: an exception is a bug (FatalError)
        model = self.model
        scores: Future[Scores] | None = None
        ahead = len(batch) >= SCORE_AHEAD_FROM
        if ahead:
            scores = self._thread.submit(self._score, model, batch.beats)
        elif len(batch):
            scores = Future()
            try:
                scores.set_result(self._score(model, batch.beats))
            except Exception as exc:  # reported where a scoring thread's failure is: in _finish
                scores.set_exception(exc)
        pending = _Pending(batch, model, scores, len(records), first, after, polled_at)
        previous, self._pending = self._pending, pending
        ready = [] if previous is None else [self._finish(previous)]
        if not ahead:
            self._pending = None
            ready.append(self._finish(pending))
        return ready

    def flush(self) -> list[ScoredBatch]:
        """The batch being scored ahead, finished (none if there is none)."""
        pending, self._pending = self._pending, None
        return [] if pending is None else [self._finish(pending)]

    def drop(self) -> Offsets:
        """Forget the batch being scored ahead; where its partitions must be re-read from."""
        pending, self._pending = self._pending, None
        return {} if pending is None else pending.first

    def close(self) -> None:
        self._thread.shutdown()

    def _score(self, model: Model, beats: np.ndarray) -> Scores:
        with self._metrics.inference.time():
            return model.score(beats)

    def _finish(self, pending: _Pending) -> ScoredBatch:
        scores = None
        if pending.scores is not None:
            try:
                scores = pending.scores.result()
            except Exception as exc:
                raise BatchFailed(pending.first, "score", f"scoring failed: {exc!r}") from exc
        model = pending.model
        try:
            outputs = self.outputs.build(pending.batch, scores, model.threshold, model.version)
        except Unpublishable as exc:
            raise BatchFailed(pending.first, "produce", f"a dead letter cannot be written: {exc}") from exc
        step = None
        if self.episodes is not None:
            store = self.episodes
            step = store.step(
                outputs.batch, outputs.anomaly, outputs.score, model.threshold, pending.after, model.version
            )
            outputs.records.extend(step.alerts)
            self._metrics.set_episodes(store.open, store.sources, store.state_bytes)
        return ScoredBatch(
            outputs, pending.consumed, pending.first, pending.after, pending.polled_at, time.time(), step
        )
