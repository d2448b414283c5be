"""The worker loop: poll → decode → score → publish → commit, with one stop flag.

Offsets are committed only after the batch's outputs were acknowledged
(at-least-once) or inside the batch's transaction (exactly-once), always from
this loop, never from a rebalance callback. A batch whose outputs fail is
rewound (seek to its first offsets) and processed again; nothing after a
failure is committed for it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import InvalidProducerEpochError, KafkaError, ProducerFencedError

from ecg_anomaly.errors import EcgAnomalyError
from schemas.artifact import ArtifactError
from worker.decode import BeatDecoder, DecodedBatch
from worker.events import OutputBuilder
from worker.health import HealthState
from worker.kafka_io import AssignmentTracker, Watchdog, broker_connected, next_offsets, send_all
from worker.metrics import WorkerMetrics, observe_many
from worker.model import Model, ModelReloader, Scores
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

RETRY_BACKOFF = 1.0  # seconds before re-processing a rewound batch
MAX_FAILED_BATCHES = 5  # in a row; then exit so the pod restarts with fresh clients


class FatalError(EcgAnomalyError):
    """The worker must exit non-zero so the pod restarts (fenced, broker gone too long)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        model: Model,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        metrics: WorkerMetrics,
        health: HealthState,
        watchdog: Watchdog,
        tracker: AssignmentTracker,
    ) -> None:
        self.settings = settings
        self.model = model
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics
        self.health = health
        self.watchdog = watchdog
        self.tracker = tracker
        self.decoder = BeatDecoder(model.metadata.input_length, settings.max_batch, settings.max_record_bytes)
        self.outputs = OutputBuilder(
            settings.anomaly_topic,
            settings.scores_topic,
            settings.dlq_topic,
            settings.group_id,
            settings.client_id,
        )
        self.reloader = ModelReloader(
            settings.model, settings.model_sha256, settings.threshold, settings.inference_threads
        )
        self._stopping = False
        self._next_reload = time.monotonic() + settings.reload_interval
        self._last_connected = time.monotonic()
        self._assignment: set[TopicPartition] = set()
        self._failed_batches = 0
        self._processed: dict[TopicPartition, Any] = {}  # at-least-once: next offset per partition done
        metrics.set_model(model.version, model.sha256, model.threshold)
        health.model_loaded = True

    def stop(self) -> None:
        """Ask the loop to finish its batch and drain. Safe to call from a signal handler."""
        if not self._stopping:
            self._stopping = True
            self.watchdog.final_deadline(self.settings.drain_timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def run(self) -> None:
        """Turn until :meth:`stop`; raise :class:`FatalError` when the pod should restart."""
        log.info("worker loop started", extra={"guarantee": self.settings.guarantee})
        while not self._stopping:
            self.health.beat()
            self._watch_connection()
            self._maybe_reload()
            try:
                records = self.consumer.poll(
                    timeout_ms=self.settings.max_wait_ms, max_records=self.settings.max_batch
                )
            except KafkaError as exc:  # e.g. an authorization or offset error: count, back off, retry
                self.metrics.errors.labels("poll").inc()
                log.error("poll failed", extra={"error": repr(exc)})
                self._sleep(RETRY_BACKOFF)
                continue
            if records:
                self._process(records)
        log.info("stop requested: last batch done, draining")
        if not self.settings.exactly_once:
            self._final_commit()

    def _watch_connection(self) -> None:
        now = time.monotonic()
        connected = broker_connected(self.consumer)
        assignment = set(self.tracker.assigned)  # not consumer.assignment(): stale during a rebalance
        rebalancing = self.tracker.rebalancing_since
        if assignment != self._assignment:
            self._assignment = set(assignment)
            self.metrics.set_partitions(tp.partition for tp in assignment)
        if connected != self.health.broker_connected:
            log.log(
                logging.INFO if connected else logging.WARNING,
                "broker reachable" if connected else "broker unreachable",
            )
        self.health.broker_connected = connected
        self.health.assigned = bool(assignment) and rebalancing is None
        self.metrics.ready.set(1 if self.health.ready() else 0)
        if connected:
            self._last_connected = now
        elif now - self._last_connected > self.settings.broker_timeout:
            raise FatalError(
                f"broker unreachable for more than --broker-timeout={self.settings.broker_timeout} s"
            )
        if rebalancing is not None and now - rebalancing > self.settings.broker_timeout:
            # Seen with kafka-python 3.0.12 after partitions were added: a member revoked its
            # partitions, never completed the join, and the group went on without it. A fresh
            # consumer (the pod's restart) joins at once.
            raise FatalError(
                f"group rebalance not completed within --broker-timeout={self.settings.broker_timeout} s"
            )

    def _maybe_reload(self) -> None:
        if not self.settings.reload_interval or time.monotonic() < self._next_reload:
            return
        self._next_reload = time.monotonic() + self.settings.reload_interval
        try:
            model = self.reloader.check()
        except ArtifactError as exc:
            self.metrics.errors.labels("model_reload").inc()
            log.error("model reload failed; keeping the loaded model", extra={"reason": str(exc)})
            return
        if model is None:
            return
        if model.metadata.input_length != self.decoder.input_length:
            self.decoder = BeatDecoder(
                model.metadata.input_length, self.settings.max_batch, self.settings.max_record_bytes
            )
        old, self.model = self.model, model
        self.metrics.set_model(model.version, model.sha256, model.threshold)
        self.metrics.reloads.inc()
        log.info(
            "model reloaded",
            extra={
                "old_version": old.version,
                "version": model.version,
                "sha256": model.sha256,
                "threshold": model.threshold,
            },
        )

    def _process(self, records: dict[TopicPartition, list[Any]]) -> None:
        flat = [r for recs in records.values() for r in recs]
        model = self.model  # one model per batch, even if a reload lands later
        try:
            batch = self.decoder.decode(flat)
        except Exception as exc:  # every record has a reason code; an exception here is a bug
            self.metrics.errors.labels("decode").inc()
            raise FatalError(f"decoding a batch failed unexpectedly: {exc!r}") from exc
        scores = None
        if batch.meta:
            try:
                with self.metrics.inference.time():
                    scores = model.score(batch.beats)
            except Exception:
                self.metrics.errors.labels("score").inc()
                log.exception("scoring failed; the batch will be re-processed")
                self._rewind(records)
                return
        outputs = self.outputs.build(batch.meta, scores, model.threshold, model.version, batch.rejects)
        offsets = next_offsets(records)
        if self.settings.exactly_once:
            done = self._commit_transaction(outputs.records, offsets)
        else:
            done = self._publish_then_commit(outputs.records, offsets)
        if not done:
            self._failed_batches += 1
            if self._failed_batches >= MAX_FAILED_BATCHES:
                raise FatalError(f"{self._failed_batches} batches in a row could not be published")
            self._rewind(records)
            return
        self._failed_batches = 0
        self._count(flat, batch, scores, outputs.anomaly)
        self._update_lag(offsets)

    def _publish_then_commit(self, out: list[Any], offsets: dict[TopicPartition, Any]) -> bool:
        try:
            send_all(self.producer, out, self.settings.kafka_timeout)
        except Exception as exc:
            self.metrics.errors.labels("produce").inc()
            log.error(
                "publishing outputs failed; offsets not committed, batch will be re-processed",
                extra={"error": repr(exc)},
            )
            return False
        # Asynchronous: the outputs are acknowledged, so a lost commit only means re-processing
        # (duplicates keep their event ids). The final commit on drain is synchronous.
        owned = self.consumer.assignment()
        offsets = {tp: om for tp, om in offsets.items() if tp in owned}
        self._processed.update(offsets)
        self.consumer.commit_async(offsets, callback=self._on_commit)
        return True

    def _on_commit(self, offsets: Any, response: Any) -> None:
        """Commit result, on the client's IO thread: only count and log."""
        if isinstance(response, BaseException):
            self.metrics.errors.labels("commit").inc()
            log.warning(
                "offset commit failed; these records may be re-processed", extra={"error": repr(response)}
            )

    def _final_commit(self) -> None:
        owned = self.consumer.assignment()
        offsets = {tp: om for tp, om in self._processed.items() if tp in owned}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets, timeout_ms=int(self.settings.kafka_timeout * 1000))
            log.info("final offsets committed", extra={"partitions": sorted(tp.partition for tp in offsets)})
        except Exception as exc:
            self.metrics.errors.labels("commit").inc()
            log.error("final offset commit failed; records may be re-processed", extra={"error": repr(exc)})

    def _commit_transaction(self, out: list[Any], offsets: dict[TopicPartition, Any]) -> bool:
        timeout = self.settings.kafka_timeout
        try:
            self.producer.begin_transaction()
            send_all(self.producer, out, timeout)
            with self.watchdog.guard("send_offsets_to_transaction", timeout):
                self.producer.send_offsets_to_transaction(offsets, self.consumer.group_metadata())
            with self.watchdog.guard("commit_transaction", timeout):
                self.producer.commit_transaction()
            return True
        except Exception as exc:
            if _fenced(exc):  # a fenced producer cannot abort either: restart
                raise FatalError(
                    f"producer fenced ({exc!r}): another instance owns this transactional id", 3
                ) from exc
            self.metrics.errors.labels("transaction").inc()
            log.error("transaction failed; aborting, batch will be re-processed", extra={"error": repr(exc)})
        try:
            with self.watchdog.guard("abort_transaction", timeout):
                self.producer.abort_transaction()
        except Exception as exc:
            raise FatalError(
                f"aborting the transaction failed ({exc!r}); restarting is the safe way out"
            ) from exc
        return False

    def _rewind(self, records: dict[TopicPartition, list[Any]]) -> None:
        owned = self.consumer.assignment()
        for tp, recs in records.items():
            if recs and tp in owned:
                self.consumer.seek(tp, recs[0].offset)
        self._sleep(RETRY_BACKOFF)

    def _sleep(self, seconds: float) -> None:
        """Sleep that ends early when a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.05)

    def _count(
        self, flat: list[Any], batch: DecodedBatch, scores: Scores | None, anomaly: np.ndarray
    ) -> None:
        m = self.metrics
        m.consumed.inc(len(flat))
        m.batches.inc()
        for reject in batch.rejects:
            m.dead_letters.labels(reject.reason.value).inc()
            log.debug("dead-lettered", extra={"reason": reject.reason.value})
        if batch.rejects:
            first = batch.rejects[0].record
            log.info(
                "records dead-lettered",
                extra={
                    "count": len(batch.rejects),
                    "first_reason": batch.rejects[0].reason.value,
                    "topic": first.topic,
                    "partition": first.partition,
                    "offset": first.offset,
                },
            )
        if scores is None:
            return
        n_anomaly = int(anomaly.sum())
        m.scored.labels("anomaly").inc(n_anomaly)
        m.scored.labels("normal").inc(len(anomaly) - n_anomaly)
        m.batch_size.observe(len(anomaly))
        observe_many(m.reconstruction_error, scores.score.astype(np.float64))
        now_ms = time.time() * 1000
        stamps = np.fromiter(
            (b.record.timestamp for b in batch.meta), dtype=np.float64, count=len(batch.meta)
        )
        observe_many(m.latency, np.maximum(now_ms - stamps, 0.0) / 1000)
        for beat, flag in zip(batch.meta, anomaly.tolist(), strict=True):
            if beat.label is not None:
                m.labelled.labels(beat.label, "anomaly" if flag else "normal").inc()

    def _update_lag(self, offsets: dict[TopicPartition, Any]) -> None:
        for tp, om in offsets.items():
            end = self.consumer.highwater(tp)
            if end is not None:
                self.metrics.set_lag(tp.partition, end - om.offset)


_FENCED = (ProducerFencedError, InvalidProducerEpochError)


def _fenced(exc: BaseException) -> bool:
    """Whether ``exc`` is fencing: kafka-python raises it directly or wraps it in a ``KafkaError``
    (as an argument, e.g. a send after the sender hit ProducerFencedError, or as the cause)."""
    chain: BaseException | None = exc
    for _ in range(5):
        if chain is None:
            return False
        if isinstance(chain, _FENCED) or any(isinstance(arg, _FENCED) for arg in chain.args):
            return True
        chain = chain.__cause__ or chain.__context__
    return False
