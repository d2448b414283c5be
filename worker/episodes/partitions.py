"""What partitions moving means for the episode state: restored before they are processed, dropped
when they go, and reloaded when the loop rewinds them after a failed batch.

A rewind goes back to where the failed batch (or the first unacknowledged one) started, but the
state in memory had already stepped past it. The changelog holds the state as of the last
checkpoint (:mod:`ecg_anomaly.worker.checkpoint` writes one before the rewind where it can); the
rewound partitions are reloaded from it, and re-read from no later than the offset after the last
record that state reflects, so no beat is missed and none is applied twice.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from ecg_anomaly.worker.clients import FatalError
from ecg_anomaly.worker.episodes.changelog import ChangelogWriter
from ecg_anomaly.worker.episodes.restore import Restorer
from ecg_anomaly.worker.episodes.store import EpisodeStore
from ecg_anomaly.worker.inflight import Offsets
from ecg_anomaly.worker.metrics import WorkerMetrics

log = logging.getLogger("ecg_anomaly.worker.loop")


class EpisodePartitions:
    def __init__(
        self,
        store: EpisodeStore,
        writer: ChangelogWriter,
        restorer: Restorer,
        metrics: WorkerMetrics,
        timeout: float,
    ) -> None:
        self.store = store
        self.writer = writer
        self._restorer = restorer
        self._metrics = metrics
        self._timeout = timeout

    def assigned(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        """Restore the state of newly assigned partitions (inside the rebalance callback)."""
        if assigned:
            self._restore(consumer, assigned, "assigned")

    def revoked(self, partitions: list[int]) -> None:
        self.store.drop(partitions)
        self.writer.forget(partitions)
        self._gauges()

    def rewound(self, consumer: Consumer, rewind: Offsets) -> Offsets:
        """Reload the rewound partitions; where each must be re-read from (never later than asked)."""
        if not rewind:
            return rewind
        committed = self._restore(consumer, [TopicPartition(t, p) for t, p in rewind], "rewound")
        store, out = self.store, {}
        for (topic, p), offset in rewind.items():
            through = store.through(p)
            start = through + 1 if through >= 0 else committed.get(p, OFFSET_BEGINNING)
            out[(topic, p)] = min(offset, start if start >= 0 else OFFSET_BEGINNING)
        return out

    def _restore(self, consumer: Consumer, tps: list[TopicPartition], why: str) -> dict[int, int]:
        started = time.monotonic()
        try:
            committed = {tp.partition: tp.offset for tp in consumer.committed(tps, self._timeout)}
        except KafkaException as exc:
            raise FatalError(f"episodes: cannot read the committed offsets to restore from: {exc}") from exc
        read = self._restorer.restore(sorted(committed), committed)
        seconds = time.monotonic() - started
        self._metrics.episode_restore.observe(seconds)
        self._metrics.episode_restored_records.inc(read)
        self._gauges()
        log.info(
            "episode state restored",
            extra={
                "why": why,
                "partitions": sorted(committed),
                "records": read,
                "sources": self.store.sources,
                "open": self.store.open,
                "seconds": round(seconds, 3),
            },
        )
        return committed

    def _gauges(self) -> None:
        s = self.store
        self._metrics.set_episodes(s.open, s.sources, s.state_bytes)
