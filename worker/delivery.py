"""The guarantee, as an object: how a scored batch's outputs are published and its offsets committed.

Two strategies behind one small interface (:class:`Delivery`), each owning its commit logic and
returning what to rewind when a batch's outputs fail:

* :class:`AtLeastOnce` sends a batch's outputs and lets the loop go on polling; a batch's offsets
  are committed once the broker acknowledged its outputs and those of every earlier batch
  (:mod:`ecg_anomaly.worker.inflight`), asynchronously and at most every ``--commit-interval-ms``,
  synchronously before partitions are revoked and on drain (:mod:`ecg_anomaly.worker.checkpoint`:
  with episodes on, the changelog values of those batches are written and acknowledged first).
* :class:`ExactlyOnce` publishes each batch in one Kafka transaction with its input offsets and,
  with episodes on, its alert records and changelog values.

Both publish through :func:`send`, the one path that hands records to the producer, and call
``done(tally)`` once a batch is safe (the metrics count it then).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from itertools import repeat, starmap
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Producer

from ecg_anomaly.worker.checkpoint import Checkpoint
from ecg_anomaly.worker.clients import (
    FatalError,
    client_failure,
    denied,
    fatal,
    fenced,
    kafka_error,
    partitions,
)
from ecg_anomaly.worker.episodes.changelog import ChangelogWriter
from ecg_anomaly.worker.episodes.store import Changes
from ecg_anomaly.worker.events import OutRecord
from ecg_anomaly.worker.inflight import Batch, InFlight, Offsets
from ecg_anomaly.worker.metrics import WorkerMetrics
from ecg_anomaly.worker.pipeline import ScoredBatch
from ecg_anomaly.worker.settings import WorkerSettings
from ecg_anomaly.worker.tally import Tally
from ecg_anomaly.worker.watchdog import Watchdog

log = logging.getLogger(__name__)

IN_FLIGHT_BATCHES = 4  # at-least-once: full batches of input whose outputs may await acknowledgement


class Delivery(Protocol):
    producer: Producer
    denied: bool  # the last failed batch was refused for want of an ACL (a restart would not help)
    changelog_denied: bool  # at-least-once: the last changelog write was refused for want of an ACL

    def publish(self, batch: ScoredBatch) -> Offsets | None:
        """Publish ``batch``; the offsets to rewind to if it failed at once (exactly-once), else None."""

    def settle(self) -> Offsets | None:
        """Between polls: commit what is safe; the offsets to rewind to if an earlier batch failed."""

    def idle(self) -> bool:
        """Nothing published awaits the broker."""

    def before_revoke(self) -> None:
        """Partitions are about to move: make safe and commit what can be."""

    def lost(self) -> None:
        """Partitions were taken away (session expired): nothing of theirs may be committed."""

    def drain(self) -> None:
        """A clean stop: wait for what was published and commit it."""

    def replace_producer(self, producer: Producer) -> None:
        """Publish with ``producer`` from now on (the old one is flushed first)."""


def send(producer: Producer, records: list[OutRecord], on_delivery: Callable[..., None]) -> None:
    """Hand every record to the producer; a full local queue waits for acknowledgements.

    One ``produce`` call per record with its arguments by position, driven by ``starmap``: no
    bytecode runs per record (the order is confluent-kafka's: topic, value, key, partition,
    callback, on_delivery, timestamp, headers; the tests read every field back through another
    client). Raises ``KafkaException`` for a record the client refuses at once, with how many were
    handed over in ``args[1]``.
    """
    if not records:
        return
    topics, keys, values, headers, stamps, partitions = zip(*records, strict=True)
    total, done = len(records), 0
    while True:
        left = iter(values[done:])  # how far the client got: it takes one value per record
        calls = zip(
            topics[done:],
            left,
            keys[done:],
            partitions[done:],
            repeat(on_delivery),
            repeat(None),
            stamps[done:],
            headers[done:],
        )
        try:
            deque(starmap(producer.produce, calls), 0)  # consumed in C, nothing kept
            return
        except BufferError:
            done = total - left.__length_hint__() - 1
            producer.poll(0.05)
        except KafkaException as exc:
            raise KafkaException(exc.args[0], total - left.__length_hint__() - 1) from exc


def failure_message(error: Any, refused: dict[str, Any] | None) -> str:
    """The log line of a batch whose outputs failed: for a refused principal, which ACL is missing."""
    if denied(error) and refused:
        topic = refused["refused_by"]
        return (
            f"not authorised to WRITE to topic {topic}: an ACL is missing (grant WRITE on topic {topic} "
            "to this worker's principal); offsets not committed, the batch will be retried"
        )
    return "publishing outputs failed; offsets not committed, batch will be re-processed"


class AtLeastOnce:
    def __init__(
        self,
        settings: WorkerSettings,
        consumer: Consumer,
        producer: Producer,
        watchdog: Watchdog,
        metrics: WorkerMetrics,
        done: Callable[[Tally], None],
        waiting: Callable[[], None],
        changelog: ChangelogWriter | None = None,
    ) -> None:
        """``waiting`` is called while the loop waits for acknowledgements (the loop's heartbeat)."""
        self.producer = producer
        self._settings = settings
        self._consumer = consumer
        self._watchdog = watchdog
        self._metrics = metrics
        self._done = done
        self._waiting = waiting
        self._in_flight = InFlight(IN_FLIGHT_BATCHES * settings.max_batch)
        self._checkpoint = Checkpoint(
            consumer, metrics, settings.commit_interval_ms, changelog, send, self._flush
        )
        self.denied = False

    @property
    def changelog_denied(self) -> bool:
        return self._checkpoint.denied

    def publish(self, batch: ScoredBatch) -> None:
        records = batch.outputs.records
        tally = Tally.of(batch)  # all the batch keeps while its outputs await acknowledgement
        changes = None if batch.episodes is None else batch.episodes.changes
        flight = Batch(
            batch.first, batch.after, batch.consumed, len(records), lambda: self._retired(tally, changes)
        )
        self._in_flight.add(flight)
        try:
            send(self.producer, records, flight.delivered)
        except KafkaException as exc:
            flight.unsent(len(records) - exc.args[1], exc.args[0], records[exc.args[1]].topic)
        self.producer.poll(0)

    def settle(self) -> Offsets | None:
        """Retire acknowledged batches; recover from a failed one; wait while the backlog is full.

        Commits are asynchronous and at most one per ``--commit-interval-ms``: one per batch would
        be hundreds a second on a trickle, each a write to ``__consumer_offsets``.
        """
        while len(self._in_flight):
            self.producer.poll(0)
            offsets, failed = self._in_flight.retire()
            self._checkpoint.add(offsets)
            if failed is not None:
                return self._recover(failed)
            if not self._in_flight.full():
                break
            self._waiting()
            self.producer.poll(0.05)  # wait for acknowledgements before taking more input
        self._checkpoint.tick(self.producer)
        return None

    def idle(self) -> bool:
        return not len(self._in_flight) and not self._checkpoint.writing

    def before_revoke(self) -> None:
        """Commit what is acknowledged, synchronously; forget the rest (the next owner redoes it)."""
        if len(self._in_flight):
            self._flush("flush before revoke")
            offsets, _ = self._in_flight.retire()
            self._checkpoint.add(offsets)
        if not self._checkpoint.sync(self.producer):
            log.warning("checkpoint before revoke failed; records may be re-processed")
        self._in_flight.clear()
        self._checkpoint.clear()

    def lost(self) -> None:
        self._in_flight.clear()
        self._checkpoint.clear()

    def drain(self) -> None:
        """Wait for the outputs sent and commit what they made safe, synchronously."""
        if len(self._in_flight):
            self.producer.flush(max(self._settings.drain_timeout - 3, 1))
        offsets, failed = self._in_flight.retire()
        if failed is not None:
            log.error("outputs failed during the drain; their records will be re-processed")
        self._checkpoint.add(offsets)
        if self._checkpoint.sync(self.producer):
            log.info("final offsets committed", extra={"partitions": sorted(p for _, p in offsets)})
        else:
            log.error("final checkpoint failed; records may be re-processed")

    def _retired(self, tally: Tally, changes: Changes | None) -> None:
        self._done(tally)
        self._checkpoint.changed(changes)

    def replace_producer(self, producer: Producer) -> None:
        if (
            not self.idle()
        ):  # outputs, or a checkpoint's changelog records: only this producer reports on them
            self._flush("flush before a new producer")
        self.producer = producer

    def _recover(self, failed: Batch) -> Offsets:
        """A batch's output failed: let the others land (their duplicates are harmless), rewind all."""
        self._metrics.errors.labels("produce").inc()
        self.denied = denied(failed.error)
        log.error(
            failure_message(failed.error, failed.refused),
            extra={"error": str(failed.error), **(failed.refused or {})},
        )
        self._flush("flush after a failed output")
        self._checkpoint.sync(self.producer)  # what did retire: the changelog then covers it
        return self._in_flight.clear()

    def _flush(self, why: str) -> None:
        timeout = self._settings.kafka_timeout
        with self._watchdog.guard(why, timeout + 5):
            self.producer.flush(timeout)


class ExactlyOnce:
    """One transaction per batch: its outputs and its input offsets, committed together or not at all."""

    def __init__(
        self,
        settings: WorkerSettings,
        consumer: Consumer,
        producer: Producer,
        watchdog: Watchdog,
        metrics: WorkerMetrics,
        done: Callable[[Tally], None],
        changelog: ChangelogWriter | None = None,
    ) -> None:
        self.producer = producer
        self._settings = settings
        self._consumer = consumer
        self._watchdog = watchdog
        self._metrics = metrics
        self._done = done
        self.denied = False
        self.changelog_denied = False  # its changelog values are in the transaction: see denied
        self._changelog = changelog

    def publish(self, batch: ScoredBatch) -> Offsets | None:
        records = batch.outputs.records
        written = None
        if batch.episodes is not None and self._changelog is not None:
            changelog, written = self._changelog.records(batch.episodes.changes)
            records = records + changelog
        deliveries = Batch({}, {}, 0, len(records))  # only its record of the first failed delivery is read
        try:
            self.producer.begin_transaction()
            try:
                send(self.producer, records, deliveries.delivered)
            except KafkaException as exc:  # e.g. a topic this principal may not write to, known already
                deliveries.unsent(0, exc.args[0], records[exc.args[1]].topic)
                raise
            metadata = self._consumer.consumer_group_metadata()
            after = partitions(batch.after)
            self._transactional(
                "send_offsets_to_transaction",
                lambda t: self.producer.send_offsets_to_transaction(after, metadata, t),
            )
            self._transactional("commit_transaction", self.producer.commit_transaction)
        except Exception as exc:
            error = kafka_error(exc)
            if error is not None and fatal(exc):  # fenced, or the producer is otherwise unusable
                raise client_failure(error) from exc
            self._metrics.errors.labels("transaction").inc()
            self.denied = denied(deliveries.error) or denied(error)
            message = (
                failure_message(deliveries.error, deliveries.refused)
                if self.denied
                else "transaction failed; aborting, batch will be re-processed"
            )
            log.error(message, extra={"error": repr(exc), **(deliveries.refused or {})})
            self._abort()
            return batch.first
        if written is not None and self._changelog is not None:
            self._changelog.acknowledged(written)
        self._done(Tally.of(batch))
        return None

    def settle(self) -> None:
        return None

    def idle(self) -> bool:
        return True

    def before_revoke(self) -> None:
        """Every published batch is committed already."""

    def lost(self) -> None:
        """An open transaction holds nothing: each batch's is committed or aborted in publish()."""

    def drain(self) -> None:
        """Every published batch is committed already."""

    def replace_producer(self, producer: Producer) -> None:
        self.producer = producer

    def _abort(self) -> None:
        try:
            self._transactional("abort_transaction", self.producer.abort_transaction)
        except Exception as exc:
            raise FatalError(
                f"aborting the transaction failed ({exc!r}); restarting is the safe way out",
                3 if fenced(exc) else 1,
            ) from exc

    def _transactional(self, name: str, call: Callable[[float], Any]) -> None:
        """A transactional call, retried while librdkafka says the error is retriable (e.g. a timeout)."""
        deadline = time.monotonic() + self._settings.kafka_timeout
        while True:
            left = deadline - time.monotonic()
            try:
                with self._watchdog.guard(name, left + 10):  # librdkafka may overrun its timeout a little
                    call(left)
                return
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is None or not error.retriable() or deadline - time.monotonic() < 1:
                    raise
