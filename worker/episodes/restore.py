"""Restore on assignment: read a partition's changelog from its start before processing its beats.

The changelog is read with ``read_committed`` (an exactly-once worker's aborted checkpoints are
skipped) to its end. One wait is needed: an exactly-once transaction's commit markers reach the
changelog partition a moment after its offsets are committed, so a worker that takes a partition
over right after another's commit could read the changelog before the last checkpoint's records are
visible. The clock of each checkpoint carries the offset it covers: the restore goes on reading
until the partition's clock covers the committed offset (or, after :data:`SETTLE_SECONDS`, accepts
what it has: a changelog behind the commits is one written before episodes were turned off).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from ecg_anomaly.worker.clients import FatalError
from ecg_anomaly.worker.episodes.changelog import ChangelogWriter
from ecg_anomaly.worker.episodes.store import EpisodeStore

log = logging.getLogger(__name__)

READ_BATCH = 10_000  # records per consume call
SETTLE_SECONDS = 5.0  # how long a changelog behind the committed offsets is waited for


class Restorer:
    """Reads changelog partitions into the store; one assign-mode consumer for the worker's life."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        store: EpisodeStore,
        writer: ChangelogWriter,
        timeout: float,
    ) -> None:
        self._consumer = consumer
        self.topic = topic
        self._store = store
        self._writer = writer
        self._timeout = timeout

    def restore(self, partitions: list[int], committed: dict[int, int]) -> int:
        """Load ``partitions``' state (``committed``: each one's committed input offset, -1 if none).

        Returns how many changelog records were read. Raises :class:`FatalError` past the timeout.
        """
        store = self._store
        for p in partitions:
            store.begin(p)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        waiting, ended, read = set(partitions), set(), 0
        started = time.monotonic()
        behind_since: float | None = None
        try:
            while waiting:
                now = time.monotonic()
                if now - started > self._timeout:
                    raise FatalError(
                        f"restoring episode state of partitions {sorted(waiting)} from {self.topic} "
                        f"took more than {self._timeout:g} s"
                    )
                for message in self._consumer.consume(READ_BATCH, 0.1):
                    p = message.partition()
                    error = message.error()
                    if error is None:
                        store.load(p, message.key(), message.value())
                        read += 1
                        ended.discard(p)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        ended.add(p)
                    else:
                        raise FatalError(f"reading the episode changelog {self.topic} [{p}]: {error.str()}")
                behind = {p for p in waiting & ended if store.through(p) + 1 < committed.get(p, -1)}
                waiting -= ended - behind
                if behind and waiting == behind:
                    behind_since = behind_since or now
                    if now - behind_since > SETTLE_SECONDS:
                        log.warning(
                            "episode changelog behind the committed offsets; going on with what it holds",
                            extra={"partitions": sorted(behind)},
                        )
                        waiting -= behind
        finally:
            self._consumer.unassign()
        for p in partitions:
            self._writer.reset(p, store.finish(p))
        return read


def restore_consumer(config: dict[str, Any]) -> Consumer:
    """The restore's consumer: assign-only (it never joins the group or commits), reads to the end."""
    return Consumer(
        {
            **config,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 16 * 1024 * 1024,
            # at the end of a partition a fetch waits this long for more: librdkafka's 500 ms was most
            # of a small restore (measured: 1.0 → 0.1 s for three short partitions)
            "fetch.wait.max.ms": 10,
            "fetch.queue.backoff.ms": 10,
        }
    )
