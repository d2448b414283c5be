"""The worker loop: poll → score (the pipeline) → publish (the delivery strategy) → settle, one stop flag.

The parts each own one job: :class:`~ecg_anomaly.worker.pipeline.ScoringPipeline` turns records
into output records, :mod:`~ecg_anomaly.worker.delivery` publishes them and commits under the
chosen guarantee, :class:`~ecg_anomaly.worker.rebalance.Rebalance` handles partitions moving. The
loop holds them together and decides about failures: a batch that fails is rewound (seek back to
its first offset) and processed again; nothing from the failure on is committed; after
:data:`MAX_FAILED_BATCHES` in a row the worker exits so the pod restarts with fresh clients.

A batch refused for want of an ACL (the principal may not write to an output topic) is different:
fresh clients would be refused the same way, and exiting would turn a missing ACL into a crash loop
whose back-off (up to 5 minutes in Kubernetes) delays the recovery after the grant, with a rebalance
of the whole group at every restart. So it is retried in place, every :data:`DENIED_BACKOFF_MAX`
seconds at most, the worker is not ready meanwhile and counts each attempt as an error, and the
first attempt after the grant goes through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from ecg_anomaly.schemas.artifact import ArtifactError
from ecg_anomaly.worker.broker_link import BrokerLink
from ecg_anomaly.worker.clients import FatalError, client_failure
from ecg_anomaly.worker.decode import BeatDecoder
from ecg_anomaly.worker.delivery import AtLeastOnce, Delivery, ExactlyOnce
from ecg_anomaly.worker.episodes.partitions import EpisodePartitions
from ecg_anomaly.worker.health import HealthState
from ecg_anomaly.worker.inflight import Offsets, earliest
from ecg_anomaly.worker.metrics import WorkerMetrics
from ecg_anomaly.worker.model import Model, ModelReloader
from ecg_anomaly.worker.outputs import OutputBuilder
from ecg_anomaly.worker.pipeline import BatchFailed, ScoredBatch, ScoringPipeline
from ecg_anomaly.worker.rebalance import Rebalance
from ecg_anomaly.worker.records import take
from ecg_anomaly.worker.settings import WorkerSettings
from ecg_anomaly.worker.tally import Counter, Tally
from ecg_anomaly.worker.topic_limits import OutputLimits, ProducerBounds
from ecg_anomaly.worker.watchdog import Watchdog

log = logging.getLogger(__name__)

RETRY_BACKOFF = 1.0  # seconds before re-processing a rewound batch
MAX_FAILED_BATCHES = 5  # in a row; then exit so the pod restarts with fresh clients
DENIED_BACKOFF_MAX = 10.0  # seconds between attempts of a batch refused for want of an ACL, at most
SETTLE_WAIT = 0.002  # seconds a poll waits while outputs are in flight (their acks are the news)
LIMITS_REREAD_AFTER = 5.0  # seconds: a failed batch re-reads the output topics' limits at most this often


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
        episodes: EpisodePartitions | None = None,
    ) -> None:
        s = self.settings = settings
        self.consumer, self.metrics, self.health, self.watchdog, self.link = (
            consumer,
            metrics,
            health,
            watchdog,
            link,
        )
        self.limits, self._producers = limits, producers
        self._bounds, self._limits_seen, self._limits_read_at = (
            limits.producer_bounds(),
            limits.refreshed,
            0.0,
        )
        self.reloader = ModelReloader(s.model, s.model_sha256, s.threshold, s.inference_threads)
        outputs = OutputBuilder(s.anomaly_topic, s.scores_topic, s.dlq_topic, s.group_id, s.client_id, limits)
        self.episodes = episodes
        store, changelog = (None, None) if episodes is None else (episodes.store, episodes.writer)
        self.pipeline = ScoringPipeline(model, self._decoder(model), outputs, metrics, store)
        self._counter = Counter(metrics)
        producer = producers(self._bounds)
        self.delivery: Delivery = (
            ExactlyOnce(s, consumer, producer, watchdog, metrics, self._done, changelog)
            if s.exactly_once
            else AtLeastOnce(s, consumer, producer, watchdog, metrics, self._done, self._tick, changelog)
        )
        self.rebalance = Rebalance(
            self.pipeline, self.delivery, metrics, link, self.delivery.publish, episodes
        )
        self._stopping = False
        self._next_reload = time.monotonic() + s.reload_interval
        self._last_connected = time.monotonic()
        self._failed_batches = 0
        self._denied_batches = 0
        self._changelog_denied = False
        self._lag: dict[int, int] = {}
        metrics.set_model(model.version, model.sha256, model.threshold)
        health.model_loaded = True

    @property
    def producer(self) -> Producer:
        return self.delivery.producer

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
        r = self.rebalance
        self.consumer.subscribe(
            [self.settings.input_topic], on_assign=r.on_assign, on_revoke=r.on_revoke, on_lost=r.on_lost
        )
        while not self._stopping:
            self._tick()
            self._maybe_reload()
            self._follow_limits()
            self._publish(self._next_batches())
            self._rewind_if(self.delivery.settle())
        self._publish(self._guarded(self.pipeline.flush))
        self.pipeline.close()
        log.info("stop requested: last batch done, draining")
        self.delivery.drain()

    # --- one turn --------------------------------------------------------------------------------

    def _next_batches(self) -> list[ScoredBatch]:
        """Whatever is fetched, up to a batch, through the pipeline; else wait for the first record.

        ``consume(n, timeout)`` waits until it has ``n`` records or the timeout; a live feed would
        always pay the timeout. Taking what is there and otherwise waiting for one record keeps
        batches large under a backlog and latency low on a trickle.
        """
        max_batch = self.settings.max_batch
        messages = self.consumer.consume(max_batch, 0)
        if not messages and self.pipeline.holding:  # nothing new to overlap with: finish it now
            return self._guarded(self.pipeline.flush)
        if not messages:
            wait = self.settings.max_wait_ms / 1000 if self.delivery.idle() else SETTLE_WAIT
            first = self.consumer.poll(wait)
            if first is None:
                return []
            messages = [first, *self.consumer.consume(max_batch - 1, 0)] if max_batch > 1 else [first]
        polled_at = time.time()
        records, failed = take(messages)
        for message in failed:  # e.g. the topic or an offset is gone, or not authorised: count, log, go on
            self.metrics.errors.labels("poll").inc()
            self.link.on_error(message.error())
        return self._guarded(lambda: self.pipeline.submit(records, polled_at)) if len(records) else []

    def _guarded(self, step: Callable[[], list[ScoredBatch]]) -> list[ScoredBatch]:
        """A pipeline step: a failed batch is rewound; anything else unexpected is a bug: exit."""
        try:
            return step()
        except BatchFailed as exc:
            self.metrics.errors.labels(exc.stage).inc()
            log.error(f"{exc}; offsets not committed, batch will be re-processed")
            self._failed(exc.rewind)
        except FatalError:
            raise
        except Exception as exc:  # every record has an outcome by design: an exception here is a bug
            self.metrics.errors.labels("decode").inc()
            raise FatalError(f"processing a batch failed unexpectedly: {exc!r}") from exc
        return []

    def _publish(self, batches: list[ScoredBatch]) -> None:
        self._rewind_if(publish_in_order(batches, self.delivery.publish))

    def _done(self, tally: Tally) -> None:
        """A batch's outputs are safe: count it; the failure streak ends."""
        self._failed_batches = self._denied_batches = 0
        self.health.outputs_denied = self.delivery.changelog_denied
        self._counter.count(tally)

    def _tick(self) -> None:
        """The heartbeat, and what the loop learns about the broker and the group between polls."""
        self.health.beat()
        link = self.link
        if link.fatal is not None:  # e.g. a static member fenced by its own rejoin after an outage
            raise client_failure(link.fatal)
        now, connected = time.monotonic(), link.connected
        if connected != self.health.broker_connected:
            log.log(
                logging.INFO if connected else logging.WARNING,
                "broker reachable" if connected else "broker unreachable",
            )
        self.health.broker_connected = connected
        self.health.joined = self.rebalance.joined
        changelog_denied = self.delivery.changelog_denied  # an ACL refuses the episodes' changelog
        if changelog_denied != self._changelog_denied:  # not ready meanwhile; ready again once written
            self._changelog_denied = changelog_denied
            self.health.outputs_denied = changelog_denied or self._denied_batches > 0
        self.metrics.ready.set(1 if self.health.ready() else 0)
        if link.lag is not self._lag:
            self._lag = link.lag
            for partition, lag in self._lag.items():
                self.metrics.set_lag(partition, lag)
        if connected:
            self._last_connected = now
        elif now - self._last_connected > self.settings.broker_timeout:
            raise FatalError(
                f"broker unreachable for more than --broker-timeout={self.settings.broker_timeout} s: "
                f"{link.cause()}"
            )
        since = self.rebalance.waiting_since(now, connected)
        if since is not None and now - since > self.settings.broker_timeout:
            raise FatalError(
                f"no rebalance completed within --broker-timeout={self.settings.broker_timeout} s"
            )

    # --- failures --------------------------------------------------------------------------------

    def _rewind_if(self, rewind: Offsets | None) -> None:
        if rewind is not None:
            self._failed(rewind, denied=self.delivery.denied)

    def _failed(self, rewind: Offsets, denied: bool = False) -> None:
        """Seek back to ``rewind``; a batch still being scored came later, so it is dropped and re-read.

        ``denied``: the broker refused the batch's outputs for want of an ACL (retried in place)."""
        if denied:  # not ready meanwhile
            self._denied_batches += 1
            self.health.outputs_denied = True
            backoff = min(RETRY_BACKOFF * 2 ** (self._denied_batches - 1), DENIED_BACKOFF_MAX)
        else:
            self._failed_batches += 1
            backoff = RETRY_BACKOFF
        if self._failed_batches >= MAX_FAILED_BATCHES:
            raise FatalError(f"{self._failed_batches} batches in a row could not be published")
        rewind = {
            tp: offset
            for tp, offset in earliest(rewind, self.pipeline.drop()).items()
            if tp in self.rebalance.partitions
        }
        if self.episodes is not None:  # their state stepped past the rewind: reload it
            rewind = self.episodes.rewound(self.consumer, rewind)
        self._reread_limits()
        for (topic, partition), offset in rewind.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # moved away meanwhile: its next owner starts from the commit
                log.warning("rewind failed", extra={"partition": partition, "error": repr(exc)})
        self._sleep(backoff)

    def _sleep(self, seconds: float) -> None:
        """Sleep that ends early when a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.05)

    # --- model reload and output limits ------------------------------------------------------------

    def _decoder(self, model: Model) -> BeatDecoder:
        s = self.settings
        return BeatDecoder(model.metadata.input_length, s.max_record_bytes, s.max_key_bytes)

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
        old = self.pipeline.model
        self.pipeline.use(model, self._decoder(model))
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
        self._publish(self._guarded(self.pipeline.flush))
        log.info(
            "output topic limits changed: new producer",
            extra={"message_max_bytes": bounds.message_max_bytes, "batch_size": bounds.batch_size},
        )
        self._bounds = bounds
        self.delivery.replace_producer(self._producers(bounds))


def publish_in_order(
    batches: list[ScoredBatch], publish: Callable[[ScoredBatch], Offsets | None]
) -> Offsets | None:
    """Publish ``batches`` in input order; after one that failed, none: they are re-read with it.

    Returns where to rewind (None when all were published). Exactly-once, a batch published after
    a failed one committed its offsets, past the failed batch's records when they share a partition;
    the rewind then re-read both: the later batch's outputs were published twice.
    """
    for i, batch in enumerate(batches):
        rewind = publish(batch)
        if rewind is not None:
            return earliest(rewind, *(later.first for later in batches[i + 1 :]))
    return None
