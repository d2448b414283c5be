"""Kafka transport: the consumer and producer the worker needs (confluent-kafka, i.e. librdkafka).

librdkafka does the network work on its own threads, in C; the Python side
pays for a call per record, not for parsing or building record batches. Every
call the worker makes takes a timeout; the transactional ones and the drain are
also watched by :class:`Watchdog`, so a hang ends in a restart. Callbacks
(rebalance, statistics, errors, logs, commit results) run inside ``consume``,
``poll`` or ``flush`` on the loop's own thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ecg_anomaly.worker._records import take
from ecg_anomaly.worker.settings import WorkerSettings
from ecg_anomaly.worker.topic_limits import ProducerBounds

log = logging.getLogger(__name__)
client_log = logging.getLogger("librdkafka")

WATCHDOG_EXIT = 70  # a guarded Kafka call overran: the pod should restart
TRANSACTION_TIMEOUT_MS = 10_000  # exactly-once: see make_producer
STATISTICS_INTERVAL_MS = 1000  # broker states and partition lag, parsed on the loop's thread


class Record(NamedTuple):
    """One consumed record as the decoder and the outputs see it (plain attributes, any client).

    A tuple: :func:`take_records` builds them in C.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int  # epoch ms
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None


def take_records(messages: list[Message]) -> tuple[list[Record], list[Message]]:
    """The records of the messages without an error, and the messages with one (in order)."""
    return take(messages, Record)


class BrokerLink:
    """Whether the worker can reach a broker, from librdkafka's statistics and error events.

    A broker that crashed or stopped answering shows as not ``UP`` in the next
    statistics (every second); "all brokers down" clears it at once. The last
    statistics also give each partition's lag.
    """

    def __init__(self) -> None:
        self.connected = False
        self.lag: dict[int, int] = {}  # partition → messages behind the log end
        self.fatal: KafkaError | None = None  # a client that reported this is unusable: restart
        self._last_error: dict[int, float] = {}

    def on_stats(self, raw: str) -> None:
        stats = orjson.loads(raw)
        self.connected = any(b.get("state") == "UP" for b in stats.get("brokers", {}).values())
        lag = {}
        for topic in stats.get("topics", {}).values():
            for key, p in topic.get("partitions", {}).items():
                position = p.get("app_offset", -1001)
                if position < 0:
                    position = p.get("committed_offset", -1001)
                end = p.get("hi_offset", -1)
                if key != "-1" and p.get("fetch_state") == "active" and position >= 0 and end >= 0:
                    lag[int(key)] = end - position
        self.lag = lag

    def on_consumer_error(self, error: KafkaError) -> None:
        """The consumer's error callback: its fatal errors arrive as ``_FATAL`` without the fatal flag.

        A static member fenced by its own rejoin after a long broker outage is one (seen in chaos
        4): the consumer can do nothing more, so the loop exits at once instead of waiting out
        ``--broker-timeout`` with no partitions. The producer's fatal errors also surface from its
        own calls, with the code that tells fencing (exit 3) from the rest.
        """
        if error.code() == KafkaError._FATAL and self.fatal is None:
            self.fatal = error
        self.on_error(error)

    def on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.connected = False
        if error.fatal() and self.fatal is None:
            self.fatal = error
        now = time.monotonic()
        if now - self._last_error.get(error.code(), -1e9) > 30:  # one line per kind per 30 s
            self._last_error[error.code()] = now
            log.warning("kafka client error", extra={"error": error.str(), "code": error.name()})


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


def fenced(exc: BaseException) -> bool:
    """Whether ``exc`` means another instance took over this transactional id (restart, don't abort)."""
    error = kafka_error(exc)
    return error is not None and error.code() in _FENCED


def fatal(exc: BaseException) -> bool:
    """Whether the producer is unusable after ``exc`` (librdkafka's fatal errors, fencing among them)."""
    error = kafka_error(exc)
    return error is not None and (error.fatal() or error.code() in _FENCED)


class Watchdog:
    """Ends the process if a guarded call overruns, or a drain its deadline: a restart beats a hang.

    One daemon thread checks two deadlines: the current guarded call's and, once
    a stop was requested, the drain's. State is set by plain attribute
    assignment (no lock), so :meth:`final_deadline` is safe in a signal handler.
    The exit is ``os._exit`` because the main thread is the one that is stuck.
    """

    def __init__(self) -> None:
        self._call: tuple[float, str, float] | None = None  # (deadline, name, started)
        self._drain_until: float | None = None
        self._exit_code = WATCHDOG_EXIT
        threading.Thread(target=self._run, name="kafka-watchdog", daemon=True).start()

    @contextmanager
    def guard(self, name: str, seconds: float) -> Iterator[None]:
        now = time.monotonic()
        self._call = (now + seconds, name, now)
        try:
            yield
        finally:
            self._call = None

    def busy_for(self) -> float:
        """Seconds the current guarded call has been running (0 when none): readiness reads it."""
        call = self._call
        return 0.0 if call is None else time.monotonic() - call[2]

    def final_deadline(self, seconds: float, exit_code: int = WATCHDOG_EXIT) -> None:
        self._exit_code = exit_code
        self._drain_until = time.monotonic() + seconds

    def _run(self) -> None:
        while True:
            time.sleep(0.2)
            now, call, drain = time.monotonic(), self._call, self._drain_until
            if call is not None and now > call[0]:
                self._exit(f"Kafka call {call[1]} did not return in time", WATCHDOG_EXIT)
            if drain is not None and now > drain:
                self._exit("drain did not finish in time", self._exit_code)

    @staticmethod
    def _exit(why: str, code: int) -> None:
        log.critical("watchdog: exiting", extra={"reason": why, "exit_code": code})
        logging.shutdown()
        os._exit(code)


def partitions(offsets: dict[tuple[str, int], int]) -> list[TopicPartition]:
    """``{(topic, partition): offset}`` as the client's list of ``TopicPartition``."""
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
