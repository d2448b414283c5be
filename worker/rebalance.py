"""The consumer's rebalance callbacks, in one place. librdkafka runs them inside ``consume``/``poll``.

Before partitions move (revoke), the batch being scored ahead is finished and published, and the
delivery strategy makes safe and commits what it can; the next owner starts from the last commit.
Partitions taken away without a revoke (lost: the session expired) get nothing committed. A
completed rebalance, even one that assigns no partition, means the member has joined its group:
an idle member is a healthy one (a surge pod during a rollout at replicas = partitions is idle).
With episodes on, an assigned partition's state is restored from the changelog here, before any of
its records is fetched, and a revoked or lost one's is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition

from ecg_anomaly.worker.broker_link import BrokerLink
from ecg_anomaly.worker.delivery import Delivery
from ecg_anomaly.worker.episodes.partitions import EpisodePartitions
from ecg_anomaly.worker.metrics import WorkerMetrics
from ecg_anomaly.worker.pipeline import BatchFailed, ScoredBatch, ScoringPipeline

log = logging.getLogger("ecg_anomaly.worker.loop")


class Rebalance:
    def __init__(
        self,
        pipeline: ScoringPipeline,
        delivery: Delivery,
        metrics: WorkerMetrics,
        link: BrokerLink,
        publish: Callable[[ScoredBatch], Any],
        episodes: EpisodePartitions | None = None,
    ) -> None:
        """``publish`` is how a finished batch is published (the delivery strategy's ``publish``)."""
        self._episodes = episodes
        self.partitions: set[tuple[str, int]] = set()
        self.rebalancing_since: float | None = time.monotonic()  # until the first assignment
        self._pipeline = pipeline
        self._delivery = delivery
        self._metrics = metrics
        self._link = link
        self._publish = publish

    @property
    def joined(self) -> bool:
        """A rebalance completed (with or without partitions for this member) and none is under way."""
        return self.rebalancing_since is None

    def waiting_since(self, now: float, connected: bool) -> float | None:
        """Since when a rebalance has been under way; no rebalance completes without a broker."""
        if self.rebalancing_since is not None and not connected:
            self.rebalancing_since = now
        return self.rebalancing_since

    def on_assign(self, consumer: Any, assigned: list[TopicPartition]) -> None:
        if self._episodes is not None:
            self._episodes.assigned(consumer, assigned)
        self.partitions |= {(tp.topic, tp.partition) for tp in assigned}
        self.rebalancing_since = None
        self._link.connected = True  # the group coordinator just answered (statistics come every second)
        self._metrics.set_partitions(p for _, p in self.partitions)
        if assigned:
            log.info("partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)})

    def on_revoke(self, _consumer: Any, revoked: list[TopicPartition]) -> None:
        if self.rebalancing_since is None:
            self.rebalancing_since = time.monotonic()
        try:
            for batch in self._pipeline.flush():  # its records are still ours: publish them
                self._publish(batch)
        except BatchFailed as exc:  # not committed: the next owner re-reads it, and those after it
            self._pipeline.drop()
            self._metrics.errors.labels(exc.stage).inc()
            log.error("a batch held before a revoke failed", extra={"reason": str(exc)})
        self._delivery.before_revoke()
        self._forget(revoked)
        if revoked:
            log.info("partitions revoked", extra={"partitions": sorted(tp.partition for tp in revoked)})

    def on_lost(self, _consumer: Any, lost: list[TopicPartition]) -> None:
        if self.rebalancing_since is None:
            self.rebalancing_since = time.monotonic()
        self._pipeline.drop()
        self._delivery.lost()
        self._forget(lost)
        log.warning("partitions lost", extra={"partitions": sorted(tp.partition for tp in lost)})

    def _forget(self, gone: list[TopicPartition]) -> None:
        self.partitions -= {(tp.topic, tp.partition) for tp in gone}
        self._metrics.set_partitions(p for _, p in self.partitions)
        if self._episodes is not None:
            self._episodes.revoked([tp.partition for tp in gone])
