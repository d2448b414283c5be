"""The worker loop: poll → decode → score → publish → commit, with one stop flag.

At-least-once: a batch's outputs are sent and the loop goes on polling; the
batch's offsets are committed once the broker acknowledged all of its outputs
and those of every earlier batch (:mod:`worker.inflight`). Exactly-once: one
transaction per batch, offsets inside it. A batch whose outputs fail is
rewound (seek back to the first offset not committed) and processed again;
nothing from the failure on is committed. Commits happen on the loop's thread:
after a poll, in the revoke callback (which librdkafka runs inside the poll)
and on drain.

Scoring runs on a second thread, one batch ahead: while onnxruntime scores
batch N (it releases the GIL), the loop builds and sends the outputs of batch
N-1. At most one batch waits there (``_pending``); it is finished before the loop
waits for input, before partitions are revoked and before the drain, and
dropped, with its offsets joining the rewind, when an earlier batch fails. A
small batch (a live feed's few records per poll) is scored on the loop's thread:
handing it over cost more than scoring it, and on a trickle there is no next
batch to overlap with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.schemas.artifact import ArtifactError
from ecg_anomaly.worker.dead_letters import Unpublishable
from ecg_anomaly.worker.decode import BeatDecoder, DecodedBatch
from ecg_anomaly.worker.events import OutputBuilder, Outputs, OutRecord
from ecg_anomaly.worker.health import HealthState
from ecg_anomaly.worker.inflight import Batch, InFlight, Offsets
from ecg_anomaly.worker.kafka_io import (
    BrokerLink,
    Record,
    Watchdog,
    exit_code_for,
    fatal,
    fenced,
    kafka_error,
    partitions,
    take_records,
)
from ecg_anomaly.worker.metrics import WorkerMetrics, observe_many
from ecg_anomaly.worker.model import Model, ModelReloader, Scores
from ecg_anomaly.worker.settings import WorkerSettings
from ecg_anomaly.worker.topic_limits import OutputLimits, ProducerBounds

log = logging.getLogger(__name__)

RETRY_BACKOFF = 1.0  # seconds before re-processing a rewound batch
MAX_FAILED_BATCHES = 5  # in a row; then exit so the pod restarts with fresh clients
IN_FLIGHT_BATCHES = 4  # at-least-once: full batches of input whose outputs may await acknowledgement
SETTLE_WAIT = 0.002  # seconds a poll waits while outputs are in flight (their acks are the news)
SCORE_AHEAD_FROM = 64  # beats; smaller batches are scored on the loop's thread
DEAD_LETTER_LOG_SECONDS = 10.0  # at most one "records dead-lettered" line this often
LIMITS_REREAD_AFTER = 5.0  # seconds: a failed batch re-reads the output topics' limits at most this often


class FatalError(EcgAnomalyError):
    """The worker must exit non-zero so the pod restarts (fenced, broker gone too long)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(slots=True)
class _Pending:
    """A decoded batch whose scores are being computed on the scoring thread."""

    consumed: int  # input records, dead letters included
    first: Offsets
    after: Offsets
    batch: DecodedBatch
    model: Model  # the model that scores it, even if a reload lands meanwhile
    scores: Future[Scores] | None  # None: nothing to score (every record dead-lettered)
    polled_at: float  # epoch seconds its records were taken from the client


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        model: Model,
        consumer: Consumer,
        producers: Callable[[ProducerBounds], Producer],
        limits: OutputLimits,
        metrics: WorkerMetrics,
        health: HealthState,
        watchdog: Watchdog,
        link: BrokerLink,
    ) -> None:
        self.settings = settings
        self.model = model
        self.consumer = consumer
        self.limits = limits
        self._producers = producers
        self._bounds = limits.producer_bounds()
        self._limits_seen = limits.refreshed
        self._limits_read_at = time.monotonic()
        self.producer = producers(self._bounds)
        self.metrics = metrics
        self.health = health
        self.watchdog = watchdog
        self.link = link
        self.decoder = self._decoder(model)
        self.outputs = OutputBuilder(
            settings.anomaly_topic,
            settings.scores_topic,
            settings.dlq_topic,
            settings.group_id,
            settings.client_id,
            limits,
        )
        self.reloader = ModelReloader(
            settings.model, settings.model_sha256, settings.threshold, settings.inference_threads
        )
        self.in_flight = InFlight(IN_FLIGHT_BATCHES * settings.max_batch)
        self._scoring = ThreadPoolExecutor(1, thread_name_prefix="scoring")
        self._pending: _Pending | None = None
        self._polled_at = time.time()  # when the last poll took records (set again by each)
        self._stopping = False
        self._next_reload = time.monotonic() + settings.reload_interval
        self._last_connected = time.monotonic()
        self._assigned: set[tuple[str, int]] = set()
        self._rebalancing_since: float | None = time.monotonic()  # until the first assignment
        self._failed_batches = 0
        self._committable: Offsets = {}  # acknowledged, not yet committed (at-least-once)
        self._next_commit = 0.0
        self._lag: dict[int, int] = {}
        self._dead_letter_log = _DeadLetterLog()
        metrics.set_model(model.version, model.sha256, model.threshold)
        health.model_loaded = True

    def _decoder(self, model: Model) -> BeatDecoder:
        s = self.settings
        return BeatDecoder(model.metadata.input_length, s.max_record_bytes, s.max_key_bytes)

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
        self.consumer.subscribe(
            [self.settings.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        while not self._stopping:
            self.health.beat()
            self._watch_connection()
            self._maybe_reload()
            self._follow_limits()
            records = self._poll()
            if records:
                self._process(records)
            self._settle()
        self._finish_pending()
        self._scoring.shutdown()
        log.info("stop requested: last batch done, draining")
        if not self.settings.exactly_once:
            self._drain()

    # --- polling -------------------------------------------------------------------------------

    def _poll(self) -> list[Record]:
        """Whatever is already fetched, up to a batch; else wait for the first record.

        ``consume(n, timeout)`` waits until it has ``n`` records or the timeout; a live feed would
        always pay the timeout. Taking what is there and otherwise waiting for one record keeps
        batches large under a backlog and latency low on a trickle.
        """
        max_batch = self.settings.max_batch
        messages = self.consumer.consume(max_batch, 0)
        if not messages and self._pending is not None:
            self._finish_pending()  # nothing new to overlap it with: its outputs go now, not after a wait
            return []
        if not messages:
            wait = SETTLE_WAIT if len(self.in_flight) else self.settings.max_wait_ms / 1000
            first = self.consumer.poll(wait)
            if first is None:
                return []
            messages = [first, *self.consumer.consume(max_batch - 1, 0)] if max_batch > 1 else [first]
        self._polled_at = time.time()
        records, failed = take_records(messages)
        for message in failed:  # e.g. the topic or an offset is gone, or not authorised: count, log, go on
            self.metrics.errors.labels("poll").inc()
            self.link.on_error(message.error())
        return records

    def _watch_connection(self) -> None:
        if self.link.fatal is not None:  # e.g. a static member fenced by its own rejoin after an outage
            raise _client_failure(self.link.fatal)
        now = time.monotonic()
        connected = self.link.connected
        if connected != self.health.broker_connected:
            log.log(
                logging.INFO if connected else logging.WARNING,
                "broker reachable" if connected else "broker unreachable",
            )
        self.health.broker_connected = connected
        self.health.assigned = bool(self._assigned) and self._rebalancing_since is None
        self.metrics.ready.set(1 if self.health.ready() else 0)
        if self.link.lag is not self._lag:
            self._lag = self.link.lag
            for partition, lag in self._lag.items():
                self.metrics.set_lag(partition, lag)
        if connected:
            self._last_connected = now
        elif now - self._last_connected > self.settings.broker_timeout:
            raise FatalError(
                f"broker unreachable for more than --broker-timeout={self.settings.broker_timeout} s"
            )
        rebalancing = self._rebalancing_since
        if rebalancing is not None and not connected:
            self._rebalancing_since = rebalancing = now  # no rebalance completes without a broker
        if rebalancing is not None and now - rebalancing > self.settings.broker_timeout:
            raise FatalError(
                f"no partitions assigned and no rebalance completed within "
                f"--broker-timeout={self.settings.broker_timeout} s"
            )

    # --- rebalance callbacks: run inside consume()/poll(), on this thread ----------------------

    def _on_assign(self, _consumer: Any, assigned: list[TopicPartition]) -> None:
        self._assigned |= {(tp.topic, tp.partition) for tp in assigned}
        self._rebalancing_since = None
        self.link.connected = True  # the coordinator just answered
        self.metrics.set_partitions(p for _, p in self._assigned)
        if assigned:
            log.info("partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)})

    def _on_revoke(self, _consumer: Any, revoked: list[TopicPartition]) -> None:
        """Before partitions move: commit what is acknowledged, forget the rest (the next owner redoes it)."""
        if self._rebalancing_since is None:
            self._rebalancing_since = time.monotonic()
        self._finish_pending()  # its records are still ours: publish (and, exactly-once, commit) them
        if not self.settings.exactly_once:
            try:
                if len(self.in_flight):
                    with self.watchdog.guard("flush before revoke", self.settings.kafka_timeout + 5):
                        self.producer.flush(self.settings.kafka_timeout)
                    offsets, _ = self.in_flight.retire()
                    self._committable.update(offsets)
                if self._committable:
                    self.consumer.commit(offsets=partitions(self._committable), asynchronous=False)
            except KafkaException as exc:
                self.metrics.errors.labels("commit").inc()
                log.warning(
                    "commit before revoke failed; records may be re-processed", extra={"error": repr(exc)}
                )
            self.in_flight.clear()
        self._committable = {}
        self._forget(revoked)
        if revoked:
            log.info("partitions revoked", extra={"partitions": sorted(tp.partition for tp in revoked)})

    def _on_lost(self, _consumer: Any, lost: list[TopicPartition]) -> None:
        """Partitions taken away without a revoke (session expired): nothing may be committed."""
        if self._rebalancing_since is None:
            self._rebalancing_since = time.monotonic()
        self._pending = None
        self.in_flight.clear()
        self._committable = {}
        self._forget(lost)
        log.warning("partitions lost", extra={"partitions": sorted(tp.partition for tp in lost)})

    def _forget(self, gone: list[TopicPartition]) -> None:
        self._assigned -= {(tp.topic, tp.partition) for tp in gone}
        self.metrics.set_partitions(p for _, p in self._assigned)

    # --- model reload --------------------------------------------------------------------------

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
            self.decoder = self._decoder(model)
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

    # --- one batch -----------------------------------------------------------------------------

    def _process(self, records: list[Record]) -> None:
        """Decode a batch and start scoring it; meanwhile finish the batch before it."""
        first: Offsets = {}
        after: Offsets = {}
        for r in records:
            tp = (r.topic, r.partition)
            if tp not in first:
                first[tp] = r.offset
            after[tp] = r.offset + 1
        model = self.model  # one model per batch, even if a reload lands later
        try:
            batch = self.decoder.decode(records)
        except Exception as exc:  # every record has a reason code; an exception here is a bug
            self.metrics.errors.labels("decode").inc()
            raise FatalError(f"decoding a batch failed unexpectedly: {exc!r}") from exc
        scores: Future[Scores] | None = None
        ahead = len(batch.meta) >= SCORE_AHEAD_FROM
        if ahead:
            scores = self._scoring.submit(self._score, model, batch.beats)
        elif batch.meta:
            scores = Future()
            try:
                scores.set_result(self._score(model, batch.beats))
            except Exception as exc:  # reported where a scoring thread's failure is: in _finish
                scores.set_exception(exc)
        pending = _Pending(len(records), first, after, batch, model, scores, self._polled_at)
        previous, self._pending = self._pending, pending
        if previous is not None:
            self._finish(previous)
        if not ahead:  # scored already (or nothing to score): its outputs go now
            self._finish_pending()

    def _score(self, model: Model, beats: np.ndarray) -> Scores:
        """On the scoring thread."""
        with self.metrics.inference.time():
            return model.score(beats)

    def _finish_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._finish(pending)

    def _finish(self, pending: _Pending) -> None:
        """Build and publish a scored batch's outputs: one transaction, or sent and tracked in flight."""
        batch, model = pending.batch, pending.model
        scores = None
        if pending.scores is not None:
            try:
                scores = pending.scores.result()
            except Exception:
                self.metrics.errors.labels("score").inc()
                log.exception("scoring failed; the batch will be re-processed")
                self._rewind(pending.first)
                return
        try:
            outputs = self.outputs.build(batch.meta, scores, model.threshold, model.version, batch.rejects)
        except Unpublishable as exc:  # the dead-letter topic is too small even for a reduced dead letter
            self.metrics.errors.labels("produce").inc()
            log.error("a dead letter cannot be written; offsets not committed", extra={"reason": str(exc)})
            self._failed(pending.first)
            return

        tally = _Tally.of(pending, outputs, built_at=time.time())

        def count() -> None:
            self._count(tally)

        if self.settings.exactly_once:
            if self._commit_transaction(outputs.records, pending.after):
                self._failed_batches = 0
                count()
            else:
                self._reread_limits()
                self._failed(pending.first)
            return
        flight = Batch(pending.first, pending.after, pending.consumed, len(outputs.records), count)
        self.in_flight.add(flight)
        self._send(outputs.records, flight)
        self.producer.poll(0)

    def _send(self, out: list[OutRecord], flight: Batch, count: bool = True) -> None:
        """Hand every output to the client; a full local queue waits for acknowledgements.

        Deliveries are reported to ``flight``; in a transaction (``count=False``) a failure also
        surfaces at the commit, so an output the client refuses at once raises instead.
        """
        produce = self.producer.produce
        on_delivery = flight.delivered
        for i, r in enumerate(out):
            while True:
                try:
                    produce(
                        r.topic,
                        r.value,
                        r.key,
                        headers=r.headers,
                        timestamp=max(r.timestamp_ms or 0, 0),  # 0: now (events, scores)
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    self.producer.poll(0.05)
                except KafkaException as exc:
                    if not count:
                        raise
                    flight.unsent(len(out) - i, exc)
                    return

    def _settle(self) -> None:
        """At-least-once: commit what is acknowledged; recover from a failed output; bound the backlog.

        Commits are asynchronous and at most one per ``--commit-interval-ms``: one per batch
        would be hundreds a second on a trickle, each a write to ``__consumer_offsets``.
        """
        if self.settings.exactly_once:
            return
        while len(self.in_flight):
            self.producer.poll(0)
            offsets, failed = self.in_flight.retire()
            if offsets:
                self._failed_batches = 0
                self._committable.update(offsets)
            if failed is not None:
                self._recover(failed)
                break
            if not self.in_flight.full():
                break
            self.health.beat()
            self._watch_connection()  # the producer's error callback reports a lost broker here
            self.producer.poll(0.05)  # wait for acknowledgements before taking more input
        if self._committable and time.monotonic() >= self._next_commit:
            self._next_commit = time.monotonic() + self.settings.commit_interval_ms / 1000
            self.consumer.commit(offsets=partitions(self._committable), asynchronous=True)
            self._committable = {}

    def _recover(self, failed: Batch) -> None:
        self.metrics.errors.labels("produce").inc()
        log.error(
            "publishing outputs failed; offsets not committed, batch will be re-processed",
            extra={"error": str(failed.error), **(failed.refused or {})},
        )
        with self.watchdog.guard("flush after a failed output", self.settings.kafka_timeout + 5):
            self.producer.flush(self.settings.kafka_timeout)  # let the others land; their dupes are harmless
        rewind = self.in_flight.clear()
        self._reread_limits()
        self._failed(rewind)

    # --- output topic limits ---------------------------------------------------------------------

    def _reread_limits(self) -> None:
        """After a failed batch: the broker may have refused a record because a topic's limit changed.

        Only the limits are read here; a new producer, if they call for one, comes at the top of the
        next loop turn (:meth:`_follow_limits`), never in the middle of a rewind.
        """
        if time.monotonic() - self._limits_read_at < LIMITS_REREAD_AFTER:
            return
        self._limits_read_at = time.monotonic()
        self.limits.refresh()

    def _follow_limits(self) -> None:
        """A producer whose size bounds no longer match the topics' limits is replaced between batches."""
        if self.limits.refreshed == self._limits_seen:
            return
        self._limits_seen = self.limits.refreshed
        bounds = self.limits.producer_bounds()
        if bounds == self._bounds:
            return
        self._finish_pending()
        if not self.settings.exactly_once and len(self.in_flight):
            with self.watchdog.guard("flush before a new producer", self.settings.kafka_timeout + 5):
                self.producer.flush(self.settings.kafka_timeout)
            offsets, failed = self.in_flight.retire()
            self._committable.update(offsets)
            if failed is not None:
                self._recover(failed)
        log.info(
            "output topic limits changed: new producer",
            extra={"message_max_bytes": bounds.message_max_bytes, "batch_size": bounds.batch_size},
        )
        self._bounds = bounds
        self.producer = self._producers(bounds)

    def _failed(self, rewind: Offsets) -> None:
        self._failed_batches += 1
        if self._failed_batches >= MAX_FAILED_BATCHES:
            raise FatalError(f"{self._failed_batches} batches in a row could not be published")
        self._rewind(rewind)

    def _drain(self) -> None:
        """At-least-once stop: wait for the outputs sent, commit what they made safe, synchronously."""
        if len(self.in_flight):
            self.producer.flush(max(self.settings.drain_timeout - 3, 1))
        offsets, failed = self.in_flight.retire()
        if failed is not None:
            log.error("outputs failed during the drain; their records will be re-processed")
        offsets = {**self._committable, **offsets}
        self._committable = {}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=partitions(offsets), asynchronous=False)
            log.info("final offsets committed", extra={"partitions": sorted(p for _, p in offsets)})
        except KafkaException as exc:
            self.metrics.errors.labels("commit").inc()
            log.error("final offset commit failed; records may be re-processed", extra={"error": repr(exc)})

    def _commit_transaction(self, out: list[OutRecord], after: Offsets) -> bool:
        refusals = Batch({}, {}, 0, len(out))  # only its record of the first failed delivery is used
        try:
            self.producer.begin_transaction()
            self._send(out, refusals, count=False)
            metadata = self.consumer.consumer_group_metadata()
            self._transactional(
                "send_offsets_to_transaction",
                lambda t: self.producer.send_offsets_to_transaction(partitions(after), metadata, t),
            )
            self._transactional("commit_transaction", self.producer.commit_transaction)
            return True
        except Exception as exc:
            error = kafka_error(exc)
            if error is not None and fatal(exc):  # fenced, or the producer is otherwise unusable
                raise _client_failure(error) from exc
            self.metrics.errors.labels("transaction").inc()
            log.error(
                "transaction failed; aborting, batch will be re-processed",
                extra={"error": repr(exc), **(refusals.refused or {})},
            )
        try:
            self._transactional("abort_transaction", self.producer.abort_transaction)
        except Exception as exc:
            raise FatalError(
                f"aborting the transaction failed ({exc!r}); restarting is the safe way out",
                3 if fenced(exc) else 1,
            ) from exc
        return False

    def _transactional(self, name: str, call: Callable[[float], None]) -> None:
        """A transactional call, retried while librdkafka says the error is retriable (e.g. a timeout)."""
        deadline = time.monotonic() + self.settings.kafka_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                with self.watchdog.guard(name, left + 10):  # librdkafka may overrun its timeout a little
                    call(left)
                return
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is None or not error.retriable() or deadline - time.monotonic() < 1:
                    raise

    def _rewind(self, rewind: Offsets) -> None:
        """Seek back to ``rewind``; a batch still being scored came later, so it is dropped and re-read."""
        pending, self._pending = self._pending, None
        if pending is not None:
            rewind = {**pending.first, **rewind}  # per partition, an earlier batch starts earlier
        for (topic, partition), offset in rewind.items():
            if (topic, partition) not in self._assigned:
                continue
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # moved away meanwhile: its next owner starts from the commit
                log.warning("rewind failed", extra={"partition": partition, "error": repr(exc)})
        self._sleep(RETRY_BACKOFF)

    def _sleep(self, seconds: float) -> None:
        """Sleep that ends early when a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.05)

    def _count(self, t: _Tally) -> None:
        m = self.metrics
        m.consumed.inc(t.consumed)
        m.batches.inc()
        for reason in t.reasons:
            m.dead_letters.labels(reason).inc()
        for cause in t.reduced:
            m.reduced_dead_letters.labels(cause).inc()
        if t.first_reject is not None:
            self._dead_letter_log.add(t.reasons, t.first_reject)
        if t.score is None:
            return
        n_anomaly = int(np.count_nonzero(t.anomaly))
        m.scored_anomaly.inc(n_anomaly)
        m.scored_normal.inc(len(t.anomaly) - n_anomaly)
        m.batch_size.observe(len(t.anomaly))
        observe_many(m.reconstruction_error, t.score.astype(np.float64))
        now = time.time()
        observe_many(m.latency, np.maximum(now * 1000 - t.timestamps, 0.0) / 1000)
        observe_many(m.fetch_latency, np.maximum(t.polled_at * 1000 - t.timestamps, 0.0) / 1000)
        m.process_latency.observe(max(t.built_at - t.polled_at, 0.0))
        m.publish_latency.observe(max(now - t.built_at, 0.0))
        for label, flag in t.labels:
            m.labelled.labels(label, "anomaly" if flag else "normal").inc()


class _DeadLetterLog:
    """One log line per :data:`DEAD_LETTER_LOG_SECONDS` about dead letters, not one per batch.

    The line names the first dead-lettered record since the last line and counts them by reason: a
    stream of bad input (or a topic limit that dead-letters every beat for a while) is a few lines a
    minute, not several a second.
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


@dataclass(slots=True)
class _Tally:
    """What a batch's metrics need once its outputs are acknowledged (not the records: memory)."""

    consumed: int
    reasons: list[str]
    reduced: list[str]  # why each reduced dead letter was reduced
    first_reject: Record | None
    score: np.ndarray | None
    anomaly: np.ndarray
    timestamps: np.ndarray  # float64 epoch ms of each scored beat
    labels: list[tuple[str, bool]]  # (ground-truth label, flagged) of the labelled beats
    polled_at: float  # epoch seconds: taken from the client
    built_at: float  # epoch seconds: outputs built

    @classmethod
    def of(cls, pending: _Pending, outputs: Outputs, built_at: float) -> _Tally:
        meta, anomaly, rejects = outputs.meta, outputs.anomaly, outputs.rejects
        stamps = np.fromiter((b.record.timestamp for b in meta), dtype=np.float64, count=len(meta))
        labels = [(b.label, f) for b, f in zip(meta, anomaly.tolist(), strict=True) if b.label is not None]
        return cls(
            pending.consumed,
            [r.reason.value for r in rejects],
            outputs.reduced,
            rejects[0].record if rejects else None,
            outputs.score,
            anomaly,
            stamps,
            labels,
            pending.polled_at,
            built_at,
        )


def commit_reporter(metrics: WorkerMetrics) -> Callable[[Any, Any], None]:
    """The consumer's ``on_commit``: results of commits, asynchronous ones included; only count and log."""

    def on_commit(error: Any, _partitions: Any) -> None:
        if error is not None:
            metrics.errors.labels("commit").inc()
            log.warning("offset commit failed; records may be re-processed", extra={"error": str(error)})

    return on_commit


def _client_failure(error: KafkaError) -> FatalError:
    """The exit for a Kafka client that reported itself unusable: 3 when fenced, else 1."""
    code = exit_code_for(error)
    what = (
        "producer fenced: another instance owns this transactional id"
        if code == 3
        else "Kafka client failed fatally"
    )
    return FatalError(f"{what}: {error.str()} ({error.name()})", code)
