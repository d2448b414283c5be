"""At-least-once checkpoints: what acknowledged batches made safe, committed at most every interval.

A batch retires once the broker acknowledged every output of it and of the batches before it
(:mod:`ecg_anomaly.worker.inflight`); its offsets then join the next checkpoint. With episodes on,
so do the changelog values the batch changed, and a checkpoint is two steps: its changelog records
are written, and once the broker acknowledged all of them, the offsets are committed. The changelog
is therefore never behind the committed offsets, and it never holds a state whose alert records
might be lost (they were acknowledged before it was written). One checkpoint is written at a time;
one that fails goes back into the next (newer values win).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from ecg_anomaly.worker.clients import FatalError, denied, partitions
from ecg_anomaly.worker.episodes.changelog import ChangelogWriter, Written
from ecg_anomaly.worker.episodes.store import Changes
from ecg_anomaly.worker.events import OutRecord
from ecg_anomaly.worker.inflight import Offsets
from ecg_anomaly.worker.metrics import WorkerMetrics

log = logging.getLogger("ecg_anomaly.worker.loop")

MAX_FAILED_CHECKPOINTS = 5  # changelog writes in a row; then exit (nothing can be committed meanwhile)


def merge(into: Changes, changes: Changes) -> None:
    """``changes`` (later) over ``into`` (earlier), key by key."""
    for p, keyed in changes.items():
        into.setdefault(p, {}).update(keyed)


@dataclass(eq=False)
class _Write:
    """A checkpoint whose changelog records await acknowledgement."""

    offsets: Offsets
    changes: Changes
    written: Written
    remaining: int
    error: Any = None

    def delivered(self, error: Any, _message: Any = None) -> None:
        if error is not None and self.error is None:
            self.error = error
        self.remaining -= 1


class Checkpoint:
    def __init__(
        self,
        consumer: Consumer,
        metrics: WorkerMetrics,
        interval_ms: int,
        changelog: ChangelogWriter | None,
        send: Callable[[Producer, list[OutRecord], Callable[..., None]], None],
        flush: Callable[[str], None],
    ) -> None:
        """``send`` is the delivery module's one produce path; ``flush(why)`` waits for the producer's
        outstanding records (watchdog-guarded)."""
        self._consumer = consumer
        self._send = send
        self._metrics = metrics
        self._interval = interval_ms / 1000
        self._changelog = changelog
        self._flush = flush
        self._offsets: Offsets = {}
        self._changes: Changes = {}
        self._write: _Write | None = None
        self._next = 0.0
        self._failures = 0
        self.denied = False  # the last changelog write was refused for want of an ACL (retried, not ready)

    def add(self, offsets: Offsets) -> None:
        self._offsets.update(offsets)

    def changed(self, changes: Changes | None) -> None:
        """A retired batch's changelog values (called in input order)."""
        if changes:
            merge(self._changes, changes)

    @property
    def writing(self) -> bool:
        """A changelog write awaits acknowledgement (and its commit)."""
        return self._write is not None

    def tick(self, producer: Producer) -> None:
        """Between polls: commit what an acknowledged changelog write made safe; start the next when due."""
        write = self._write
        if write is not None:
            producer.poll(0)  # its delivery reports (with no batch in flight, nothing else serves them)
            if write.remaining > 0:
                return
            self._write = None
            self._finish(write, asynchronous=True)
        if (self._offsets or self._changes) and time.monotonic() >= self._next:
            self._next = time.monotonic() + self._interval
            self._start(producer, asynchronous=True)

    def sync(self, producer: Producer) -> bool:
        """Write and commit everything now (before a revoke, in a recovery, on drain); True if committed."""
        if self._write is not None:
            self._flush("flush a checkpoint")
            write, self._write = self._write, None
            self._finish(write, asynchronous=False)
        if not (self._offsets or self._changes):
            return True
        if self._changelog is None:
            offsets, self._offsets = self._offsets, {}
            return self._commit(offsets, asynchronous=False)
        self._start(producer, asynchronous=False)
        self._flush("flush a checkpoint")
        write, self._write = self._write, None
        assert write is not None
        return self._finish(write, asynchronous=False)

    def clear(self) -> None:
        """Partitions were lost: nothing of theirs may be written or committed."""
        self._offsets, self._changes, self._write = {}, {}, None

    def _start(self, producer: Producer, asynchronous: bool) -> None:
        """Commit at once when there is no changelog; else send the changelog records (the commit follows)."""
        offsets, changes = self._offsets, self._changes
        self._offsets, self._changes = {}, {}
        if self._changelog is None:
            self._commit(offsets, asynchronous)
            return
        records, written = self._changelog.records(changes)
        write = self._write = _Write(offsets, changes, written, len(records))
        try:
            self._send(producer, records, write.delivered)
        except KafkaException as exc:
            write.remaining -= len(records) - exc.args[1]
            write.error = write.error or exc.args[0]
        producer.poll(0)

    def _finish(self, write: _Write, asynchronous: bool) -> bool:
        assert self._changelog is not None
        if write.error is None and write.remaining <= 0:
            self._failures = 0
            self.denied = False
            self._changelog.acknowledged(write.written)
            return self._commit(write.offsets, asynchronous)
        self._metrics.errors.labels("changelog").inc()
        self.denied = denied(write.error)
        if self.denied:  # as for the outputs: retried in place (a restart would not help), not ready
            topic = self._changelog.topic
            log.error(
                f"not authorised to WRITE to topic {topic}: an ACL is missing (grant WRITE on topic {topic} "
                "to this worker's principal); offsets not committed, the changelog write will be retried",
                extra={"error": str(write.error), "refused_by": topic},
            )
        else:
            self._failures += 1
            log.error(
                "episode changelog write failed; its offsets are not committed and it is retried",
                extra={"error": str(write.error or "not acknowledged")},
            )
        if self._failures >= MAX_FAILED_CHECKPOINTS:
            raise FatalError(f"{self._failures} episode changelog writes in a row failed: {write.error}")
        self._offsets = {**write.offsets, **self._offsets}  # newer values win
        later, self._changes = self._changes, write.changes
        merge(self._changes, later)
        return False

    def _commit(self, offsets: Offsets, asynchronous: bool) -> bool:
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=partitions(offsets), asynchronous=asynchronous)
        except KafkaException as exc:
            self._metrics.errors.labels("commit").inc()
            log.warning("offset commit failed; records may be re-processed", extra={"error": repr(exc)})
            return False
        return True
