"""The scoring pipeline: a poll's records → decoded beats → scores → the batch's output records.

It knows nothing about delivery: what it hands back (:class:`ScoredBatch`) is the records to
produce, the input offsets they cover and what the metrics will count once they are safe. With
episodes on, each finished batch also steps the episode store (in input order: batches are finished
in the order they were polled) and carries its alert records and changelog changes.

Scoring runs ahead on a second thread: while onnxruntime scores the latest batches (it releases the
GIL), the caller publishes the one before them. Up to :data:`SCORE_AHEAD` batches wait there (one
when their records are large: :data:`SCORE_AHEAD_BYTES`); :meth:`ScoringPipeline.flush` finishes
them (before the loop idles, before partitions move, before the drain) and
:meth:`ScoringPipeline.drop` forgets them when an earlier batch failed and the input is rewound. A
small batch (a live feed's few records per poll) is scored on the caller's thread and handed back at
once, after any still held: handing it over cost more than scoring it, and on a trickle there is no
next batch to overlap with.

The scoring thread takes the GIL back after every onnxruntime call (:data:`~ecg_anomaly.worker.model.
CALL_ROWS` beats) and while the loop runs Python it waits for the interpreter's switch interval to do
so, 5 ms by default: the pipeline shortens it to :data:`GIL_SWITCH_INTERVAL_S`.

The loop's thread is the worker's serial path; the scoring thread works ahead of it. On a host whose
CPUs the broker or other pods also use, the two compete for a CPU as equals: draining a backlog on
two cores beside the broker, the loop's thread waited for one 18-24 % of the time. On Linux the
scoring thread runs :data:`SCORING_NICE` steps nicer than the process (it lowers only its own
priority, which needs no privilege), so the loop's thread goes first: it waited 14-22 % of the time
(with calls of 1,024 beats; see :data:`~ecg_anomaly.worker.model.CALL_ROWS` for the throughput).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ecg_anomaly.worker.dead_letters import Unpublishable
from ecg_anomaly.worker.decode import BeatDecoder, DecodedBatch
from ecg_anomaly.worker.episodes.store import EpisodeStep, EpisodeStore
from ecg_anomaly.worker.inflight import Offsets, earliest
from ecg_anomaly.worker.metrics import WorkerMetrics
from ecg_anomaly.worker.model import Model, Scores
from ecg_anomaly.worker.outputs import OutputBuilder, Outputs
from ecg_anomaly.worker.records import Records

log = logging.getLogger(__name__)

SCORE_AHEAD_FROM = 64  # beats; smaller batches are scored on the caller's thread
# Batches scored ahead of the one being published. With one, draining a binary backlog the loop
# waited for the scoring thread 15-18% of the time (sampled with py-spy); with two, 5%. A second one
# is held only while the held batches' records total at most SCORE_AHEAD_BYTES: two full batches of
# binary beats (560 bytes each) but one of JSON beats (about 2.7 kB each), where the scoring thread
# keeps up anyway and a second batch only added 2-4 MB to the worker's peak memory.
SCORE_AHEAD = 2
SCORE_AHEAD_BYTES = 2 * 1024 * 1024
# Seconds a thread wanting the GIL waits before the holder must let it go. At the default 5 ms an
# onnxruntime call of 256 beats spent twice its CPU time waiting to hand its result back (measured
# 3.0-3.9 s of wall time for 1.4-1.6 s of CPU while draining 300,000 binary beats; 2.1-2.6 s at 0.2 ms).
GIL_SWITCH_INTERVAL_S = 0.0002
SCORING_NICE = 5  # the scoring thread's niceness above the process's (Linux)


class BatchFailed(Exception):
    """A batch could not be brought to outputs: it is rewound (``rewind``) and processed again.

    ``stage`` is the ``ecg_processing_errors_total`` label: ``score`` (onnxruntime failed) or
    ``produce`` (not even a reduced dead letter fits the dead-letter topic).
    """

    def __init__(self, rewind: Offsets, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.rewind = rewind
        self.stage = stage


def _behind_the_loop() -> None:
    """The scoring thread's start: lower its own priority by :data:`SCORING_NICE` (Linux only: elsewhere
    the id ``setpriority`` takes is a process's, not a thread's)."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + SCORING_NICE)
    except OSError:  # a sandbox that forbids it: the scoring thread keeps the loop's priority
        log.info("the scoring thread's priority could not be lowered; it keeps the loop's")


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
    size: int  # bytes of its records' values


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
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="scoring", initializer=_behind_the_loop)
        self._pending: deque[_Pending] = deque()
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))

    def use(self, model: Model, decoder: BeatDecoder) -> None:
        """Score later batches with ``model`` (a hot reload); one already scoring keeps its own."""
        self.model, self.decoder = model, decoder

    @property
    def holding(self) -> bool:
        """A batch is being scored ahead and not yet handed back."""
        return bool(self._pending)

    def submit(self, records: Records, polled_at: float) -> list[ScoredBatch]:
        """Start on ``records``; the batches ready to publish, in input order (those held beyond
        :data:`SCORE_AHEAD`, or every one held and this one if it is small).

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
        size = sum(map(len, filter(None, records.value)))
        self._pending.append(_Pending(batch, model, scores, len(records), first, after, polled_at, size))
        return self._finish_held(SCORE_AHEAD if ahead else 0)

    def flush(self) -> list[ScoredBatch]:
        """The batches being scored ahead, finished, in input order (none if there are none)."""
        return self._finish_held(0)

    def drop(self) -> Offsets:
        """Forget the batches being scored ahead; where their partitions must be re-read from."""
        rewind = earliest(*(pending.first for pending in self._pending))
        self._pending.clear()
        return rewind

    def close(self) -> None:
        self._thread.shutdown()

    def _score(self, model: Model, beats: np.ndarray) -> Scores:
        with self._metrics.inference.time():
            return model.score(beats)

    def _finish_held(self, keep: int) -> list[ScoredBatch]:
        """Finish the oldest held batches until at most ``keep`` are left, and one if their records
        are over :data:`SCORE_AHEAD_BYTES`.

        A batch that fails raises with the later ones still held (the caller drops them) and with a
        rewind that also covers the batches finished before it in this call: they were never handed
        back, so they are re-read rather than lost.
        """
        ready: list[ScoredBatch] = []
        while len(self._pending) > keep or (
            len(self._pending) > 1 and sum(p.size for p in self._pending) > SCORE_AHEAD_BYTES
        ):
            try:
                ready.append(self._finish(self._pending[0]))
            except BatchFailed as exc:
                rewind = earliest(exc.rewind, *(batch.first for batch in ready))
                raise BatchFailed(rewind, exc.stage, str(exc)) from exc.__cause__
            self._pending.popleft()
        return ready

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
