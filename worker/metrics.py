"""Prometheus metrics: created once per worker on its own registry, label sets pre-initialised.

Names and labels are a contract: the dashboard, the alerts and the benchmarks read them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ecg_anomaly.schemas.messages import ALERT_KINDS, CLOSE_REASONS, DEAD_LETTER_REASONS, LABELS

OUTCOMES = ("normal", "anomaly")
LATENCY_STAGES = ("fetch", "process", "publish")  # end to end, in order
REDUCED_CAUSES = ("size", "timestamp", "size,timestamp")
STAGES = ("decode", "score", "produce", "commit", "transaction", "poll", "model_reload", "changelog")

# Fine below 50 ms, where alerting SLOs live (25 ms is a bucket edge: the share within it is exact).
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)
_ERROR_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5)
_RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_FEW = 16  # values: up to this many, observe_many places them one by one (measured crossover ~20)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("ecg_beats_consumed", "Records taken from the input topic.", registry=r)
        self.scored = Counter("ecg_beats_scored", "Beats scored, by outcome.", ["outcome"], registry=r)
        self.dead_letters = Counter(
            "ecg_dead_letters", "Records dead-lettered, by reason code.", ["reason"], registry=r
        )
        self.reduced_dead_letters = Counter(
            "ecg_dead_letters_reduced",
            "Dead letters written reduced because the dead-letter topic would refuse the full one, by "
            "cause (size, timestamp, or both).",
            ["cause"],
            registry=r,
        )
        self.errors = Counter("ecg_processing_errors", "Failures by stage.", ["stage"], registry=r)
        self.inference = Histogram(
            "ecg_inference_duration_seconds",
            "One onnxruntime call (a batch).",
            buckets=_INFERENCE_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "ecg_end_to_end_latency_seconds",
            "Input record timestamp to outputs acknowledged (and offsets committed), per beat.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "ecg_stage_latency_seconds",
            "Where end-to-end latency goes. fetch: input record timestamp to taken from the client, "
            "per beat (the producer, the broker, the fetch); process: taken to outputs built (decode, "
            "score, events), per batch; publish: built to acknowledged (or committed), per batch.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fetch_latency, self.process_latency, self.publish_latency = (
            self.stage_latency.labels(stage) for stage in LATENCY_STAGES
        )
        self.batch_size = Histogram(
            "ecg_batch_size", "Beats per scored batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.reconstruction_error = Histogram(
            "ecg_reconstruction_error", "Score of every beat.", buckets=_ERROR_BUCKETS, registry=r
        )
        self.lag = Gauge("ecg_consumer_lag", "Messages behind the log end.", ["partition"], registry=r)
        self.model_info = Gauge(
            "ecg_model_info", "1 for the loaded model.", ["version", "sha256"], registry=r
        )
        self.threshold = Gauge("ecg_model_threshold", "The anomaly threshold in use.", registry=r)
        self.labelled = Counter(
            "ecg_labelled_beats",
            "Beats that carried a label, by label and outcome.",
            ["label", "outcome"],
            registry=r,
        )
        self.batches = Counter("ecg_batches", "Batches processed (committed or aborted).", registry=r)
        self.last_batch = Gauge(
            "ecg_last_batch_timestamp_seconds",
            "Unix time the last batch's outputs were made safe (0: none yet).",
            registry=r,
        )
        self.reloads = Counter("ecg_model_reloads", "Successful model hot reloads.", registry=r)
        self.ready = Gauge("ecg_worker_ready", "1 while /readyz answers 200.", registry=r)
        self.assigned_partitions = Gauge(
            "ecg_assigned_partitions",
            "Input partitions assigned to this worker (0: an idle group member, ready all the same).",
            registry=r,
        )

        self.episodes_open = Gauge(
            "ecg_episodes_open", "Open alert episodes in this worker's state (episodes on).", registry=r
        )
        self.episode_sources = Gauge(
            "ecg_episode_sources",
            "Sources with episode state on this worker: an open episode or anomalous beats in their window.",
            registry=r,
        )
        self.episode_state_bytes = Gauge(
            "ecg_episode_state_bytes",
            "Bytes of those sources' changelog values (what a restore of this worker's partitions reads).",
            registry=r,
        )
        self.episode_transitions = Counter(
            "ecg_episode_transitions", "Alert records written, by kind.", ["kind"], registry=r
        )
        self.episodes_closed = Counter(
            "ecg_episodes_closed",
            "Episodes closed, by reason (recovered: normal beats in a row; silent: no beat in time).",
            ["reason"],
            registry=r,
        )
        self.episode_restore = Histogram(
            "ecg_episode_restore_seconds",
            "Restoring the episode state of assigned (or rewound) partitions from the changelog.",
            buckets=_RESTORE_BUCKETS,
            registry=r,
        )
        self.episode_restored_records = Counter(
            "ecg_episode_restored_records", "Changelog records read by restores.", registry=r
        )

        # the children a batch touches, looked up once (a labels() call costs ~4 us)
        self.scored_normal, self.scored_anomaly = (self.scored.labels(o) for o in OUTCOMES)
        for outcome in OUTCOMES:
            for label in LABELS:
                self.labelled.labels(label, outcome)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for stage in STAGES:
            self.errors.labels(stage)
        for cause in REDUCED_CAUSES:
            self.reduced_dead_letters.labels(cause)
        for kind in ALERT_KINDS:
            self.episode_transitions.labels(kind)
        for reason in CLOSE_REASONS:
            self.episodes_closed.labels(reason)
        self._model_labels: tuple[str, str] | None = None
        self._lag_partitions: set[int] = set()

    def set_model(self, version: str, sha256: str, threshold: float) -> None:
        if self._model_labels is not None:
            self.model_info.remove(*self._model_labels)
        self._model_labels = (version, sha256)
        self.model_info.labels(version, sha256).set(1)
        self.threshold.set(threshold)

    def set_episodes(self, open_: int, sources: int, state_bytes: int) -> None:
        self.episodes_open.set(open_)
        self.episode_sources.set(sources)
        self.episode_state_bytes.set(state_bytes)

    def set_partitions(self, partitions: Iterable[int]) -> None:
        """Keep one lag series per assigned partition (revoked ones disappear)."""
        wanted = set(partitions)
        self.assigned_partitions.set(len(wanted))
        for gone in self._lag_partitions - wanted:
            self.lag.remove(str(gone))
        for new in wanted - self._lag_partitions:
            self.lag.labels(str(new)).set(0)
        self._lag_partitions = wanted

    def set_lag(self, partition: int, lag: int) -> None:
        if partition in self._lag_partitions:
            self.lag.labels(str(partition)).set(max(lag, 0))


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Observe every value of ``values``, adding the same counts ``observe()`` would.

    prometheus_client has no bulk observe, and one ``observe()`` per beat costs more than the whole
    inference at 25k beats/s: a large batch is counted with one vectorised bucket search. A live
    feed's batches are a few beats, where numpy's fixed cost (~12 us) was most of the batch's
    metrics, so up to ``_FEW`` values are placed one by one, as ``observe()`` does.
    """
    if values.size == 0:
        return
    bounds, buckets = histogram._upper_bounds, histogram._buckets  # bounds include +Inf
    if values.size <= _FEW:
        few = values.tolist()
        for value in few:
            buckets[bisect_left(bounds, value)].inc(1)
        histogram._sum.inc(sum(few))
        return
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(values.sum()))
