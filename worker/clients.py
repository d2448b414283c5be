"""The worker's Kafka clients (confluent-kafka, i.e. librdkafka) and how their errors are read.

librdkafka does the network work on its own threads, in C; the Python side pays for a call per
record, not for parsing or building record batches. Every call the worker makes takes a timeout;
the transactional ones and the drain are also watched by :class:`~ecg_anomaly.worker.watchdog.Watchdog`,
so a hang ends in a restart. Callbacks (rebalance, statistics, errors, logs, commit results) run
inside ``consume``, ``poll`` or ``flush`` on the loop's own thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.worker.broker_link import BrokerLink
from ecg_anomaly.worker.inflight import Offsets
from ecg_anomaly.worker.settings import WorkerSettings
from ecg_anomaly.worker.topic_limits import ProducerBounds

log = logging.getLogger(__name__)
client_log = logging.getLogger("librdkafka")

TRANSACTION_TIMEOUT_MS = 10_000  # exactly-once: see make_producer
STATISTICS_INTERVAL_MS = 1000  # broker states and partition lag, parsed on the loop's thread


def _common(settings: WorkerSettings, link: BrokerLink | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        **settings.kafka.client_config(settings.client_id),
        "reconnect.backoff.max.ms": 2000,
        "logger": client_log,  # librdkafka's own log lines as JSON lines, like ours
    }
    if link is not None:
        config["error_cb"] = link.on_error
    return config


def make_consumer(
    settings: WorkerSettings, link: BrokerLink, on_commit: Callable[[Any, Any], None]
) -> Consumer:
    """The group consumer; not yet subscribed (the loop subscribes with its rebalance callbacks)."""
    config = {
        **_common(settings, link),
        "error_cb": link.on_consumer_error,
        "group.id": settings.group_id,
        "enable.auto.commit": False,  # the loop commits what its outputs made safe
        "enable.auto.offset.store": False,
        "auto.offset.reset": settings.auto_offset_reset,
        # Never score beats of an aborted transaction (e.g. a transactional replay tool); this also
        # makes offset fetches wait for pending transactional commits (KIP-447), so a restarted
        # exactly-once worker cannot start from an offset a still-open transaction is moving.
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": settings.fetch_max_wait_ms,
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(settings.session_timeout_ms // 4, 100),
        # Prefetch bounded so memory stays flat while a backlog drains (the default is 64 MB), and
        # topped up again soon: at the default 1 s back-off a full queue drained in less and the
        # loop waited for input (a quarter of the throughput, measured).
        "queued.max.messages.kbytes": 8192,
        "queued.min.messages": 10000,
        "fetch.queue.backoff.ms": 20,
        "fetch.max.bytes": 8 * 1024 * 1024,
        "statistics.interval.ms": STATISTICS_INTERVAL_MS,
        "stats_cb": link.on_stats,
        "on_commit": on_commit,
    }
    if settings.group_instance_id:
        config["group.instance.id"] = settings.group_instance_id
    return Consumer(config)


def restore_config(settings: WorkerSettings) -> dict[str, Any]:
    """The episode restore's consumer: the worker's connection, its own client id; it never commits."""
    return {
        **_common(settings),
        "client.id": f"{settings.client_id}-restore",
        "group.id": f"{settings.group_id}-episodes-restore",
    }


def admin_config(settings: WorkerSettings) -> dict[str, Any]:
    """An admin client's configuration: the worker's connection, its own client id."""
    return {**_common(settings), "client.id": f"{settings.client_id}-admin"}


def make_producer(
    settings: WorkerSettings, bounds: ProducerBounds, link: BrokerLink | None = None
) -> Producer:
    """The outputs' producer; ``bounds`` from the output topics' limits (:mod:`worker.topic_limits`)."""
    timeout_ms = int(settings.kafka_timeout * 1000)
    config: dict[str, Any] = {
        **_common(settings, link),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.linger_ms,
        "partitioner": "murmur2_random",  # the Java client's placement of keyed records
        "message.max.bytes": bounds.message_max_bytes,
        "batch.size": bounds.batch_size,
        "request.timeout.ms": min(timeout_ms, 30000),
        "message.timeout.ms": timeout_ms,
    }
    if settings.exactly_once:
        config["transactional.id"] = settings.transactional_id
        # Short, as Kafka Streams does for exactly-once: a killed replica's open transaction holds
        # read_committed readers of the outputs until the broker aborts it after this timeout, and a
        # replacement pod (new hostname, new transactional id) cannot abort it sooner.
        config["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
        config["message.timeout.ms"] = min(timeout_ms, TRANSACTION_TIMEOUT_MS)
    return Producer(config)


_FENCED = frozenset((KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH))


def exit_code_for(error: KafkaError) -> int:
    """3 when fenced (another instance took over this transactional id), else 1."""
    return 3 if error.code() in _FENCED else 1


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The librdkafka error behind ``exc``, if it is one."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


_DENIED = frozenset(
    (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    )
)


def denied(error: Any) -> bool:
    """Whether ``error`` (a ``KafkaError``) is the broker refusing this principal: an ACL is missing."""
    return isinstance(error, KafkaError) and error.code() in _DENIED


def fenced(exc: BaseException) -> bool:
    """Whether ``exc`` means another instance took over this transactional id (restart, don't abort)."""
    error = kafka_error(exc)
    return error is not None and error.code() in _FENCED


def fatal(exc: BaseException) -> bool:
    """Whether the producer is unusable after ``exc`` (librdkafka's fatal errors, fencing among them)."""
    error = kafka_error(exc)
    return error is not None and (error.fatal() or error.code() in _FENCED)


def partitions(offsets: Offsets) -> list[TopicPartition]:
    """``{(topic, partition): offset}`` as the client's list of ``TopicPartition``."""
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]


class FatalError(EcgAnomalyError):
    """The worker must exit non-zero so the pod restarts (fenced, broker gone too long, ...)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def client_failure(error: KafkaError) -> FatalError:
    """The exit for a Kafka client that reported itself unusable: 3 when fenced, else 1."""
    code = exit_code_for(error)
    what = (
        "producer fenced: another instance owns this transactional id"
        if code == 3
        else "Kafka client failed fatally"
    )
    return FatalError(f"{what}: {error.str()} ({error.name()})", code)


def commit_reporter(count_failure: Callable[[], None]) -> Callable[[Any, Any], None]:
    """The consumer's ``on_commit``: results of commits, asynchronous ones included; only count and log."""

    def on_commit(error: Any, _partitions: Any) -> None:
        if error is not None:
            count_failure()
            log.warning("offset commit failed; records may be re-processed", extra={"error": str(error)})

    return on_commit
