"""Kafka transport: the consumer and producer the worker needs, and the few calls it makes on them.

kafka-python calls that can wait forever (``init_transactions``,
``send_offsets_to_transaction``, ``commit_transaction``,
``abort_transaction``) go through :class:`Watchdog`; everything else gets an
explicit timeout. Nothing here commits from a rebalance callback: the
listener only records what changed, the loop commits before each poll.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.structs import OffsetAndMetadata

from worker.events import OutRecord
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

WATCHDOG_EXIT = 70  # a guarded Kafka call overran: the pod should restart
TRANSACTION_TIMEOUT_MS = 10_000  # exactly-once: see make_producer


def security_config(settings: WorkerSettings) -> dict[str, Any]:
    """kafka-python's SSL/SASL options from the settings (secrets revealed only here)."""
    config: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.startswith("SASL"):
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            config["sasl_plain_password"] = settings.sasl_password.reveal()
    if settings.security_protocol.endswith("SSL"):
        config["ssl_check_hostname"] = settings.ssl_check_hostname
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(settings, key):
                config[key] = getattr(settings, key)
        if settings.ssl_password is not None:
            config["ssl_password"] = settings.ssl_password.reveal()
    return config


class AssignmentTracker(ConsumerRebalanceListener):
    """Records assignment changes. Runs on the client's IO thread, so it only sets state.

    ``rebalancing_since`` is set when a rebalance starts (kafka-python calls
    ``on_partitions_revoked`` before every JoinGroup, with an empty set on the
    first) and cleared when it completes (``on_partitions_assigned``, even with
    an empty assignment). kafka-python keeps reporting the revoked partitions
    from ``consumer.assignment()`` until the join completes, so that call cannot
    tell a member stuck in a rebalance from one that owns partitions.
    """

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.generation = 0  # bumps on every change, so the loop can notice one
        self.rebalancing_since: float | None = None  # time.monotonic() of the last revoke, until assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.assigned -= set(revoked)
        self.generation += 1
        if self.rebalancing_since is None:
            self.rebalancing_since = time.monotonic()
        if revoked:
            log.info("partitions revoked", extra={"partitions": sorted(p.partition for p in revoked)})

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned |= set(assigned)
        self.generation += 1
        self.rebalancing_since = None
        if assigned:
            log.info("partitions assigned", extra={"partitions": sorted(p.partition for p in assigned)})

    def on_partitions_lost(self, lost: Any) -> None:
        self.on_partitions_revoked(lost)


class CachedKeyPartitioner(DefaultPartitioner):
    """The default placement (murmur2 of the key, as the Java client), with the hash cached per key.

    Output keys are source ids, which repeat; kafka-python's murmur2 is pure Python.
    """

    def __init__(self) -> None:
        self._hash = lru_cache(maxsize=65536)(murmur2)

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):  # type: ignore[no-untyped-def]
        partitions = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if not partitions:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        ordered = sorted(partitions)
        return ordered[(self._hash(serialized_key) & 0x7FFFFFFF) % len(ordered)]


TOPIC_METADATA_WAIT = 10.0  # seconds a starting worker waits for its input topic's partitions


def make_consumer(
    settings: WorkerSettings, tracker: AssignmentTracker, watchdog: Watchdog | None = None
) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        client_id=settings.client_id,
        group_id=settings.group_id,
        group_instance_id=settings.group_instance_id or None,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        # Never score beats of an aborted transaction (e.g. a transactional replay tool).
        isolation_level="read_committed",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_poll_records=settings.max_batch,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(settings.session_timeout_ms // 4, 100),
        request_timeout_ms=max(int(settings.kafka_timeout * 1000), settings.session_timeout_ms + 5000),
        reconnect_backoff_max_ms=2000,
        **security_config(settings),
    )
    if watchdog is not None:
        with watchdog.guard("input topic metadata", settings.kafka_timeout):
            _wait_for_partitions(consumer, settings.input_topic, TOPIC_METADATA_WAIT)
    consumer.subscribe([settings.input_topic], listener=tracker)
    return consumer


def _wait_for_partitions(consumer: KafkaConsumer, topic: str, seconds: float) -> None:
    """Have the input topic's partitions in the client's metadata before joining the group.

    A group that joins while a just-created topic has no partition metadata yet gets an empty
    assignment from kafka-python 3.0.12's assignor and was seen not to rejoin for minutes. After
    ``seconds`` without partitions (a topic the broker will auto-create) the worker joins anyway.
    ``partitions_for_topic`` waits without a timeout while no broker answers: the caller guards it.
    """
    deadline = time.monotonic() + seconds
    while not consumer.partitions_for_topic(topic) and time.monotonic() < deadline:
        time.sleep(0.2)


def make_producer(settings: WorkerSettings) -> KafkaProducer:
    timeout_ms = int(settings.kafka_timeout * 1000)
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": settings.client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.linger_ms,
        "partitioner": CachedKeyPartitioner(),
        "batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "request_timeout_ms": min(timeout_ms, 30000),
        "delivery_timeout_ms": max(timeout_ms, min(timeout_ms, 30000) + settings.linger_ms),
        "max_block_ms": timeout_ms,
        "reconnect_backoff_max_ms": 2000,
        **security_config(settings),
    }
    if settings.exactly_once:
        config["transactional_id"] = settings.transactional_id
        # Short, as Kafka Streams does for exactly-once: a killed replica's open transaction holds
        # read_committed readers of the outputs until the broker aborts it after this timeout, and a
        # replacement pod (new hostname, new transactional id) cannot abort it sooner.
        config["transaction_timeout_ms"] = TRANSACTION_TIMEOUT_MS
    return KafkaProducer(**config)


def broker_connected(consumer: KafkaConsumer) -> bool:
    """Whether the consumer holds at least one live broker connection.

    kafka-python has no public call for this; its connection manager drops a
    connection as soon as the broker goes away, so this follows reachability.
    """
    manager = consumer._client._manager
    return any(conn.connected for conn in list(manager._conns.values()))


def send_all(producer: KafkaProducer, records: list[OutRecord], timeout: float) -> None:
    """Send and wait until the broker acknowledged every record; raise the first failure."""
    futures = [
        producer.send(r.topic, value=r.value, key=r.key, headers=r.headers, timestamp_ms=r.timestamp_ms)
        for r in records
    ]
    producer.flush(timeout=timeout)
    for future in futures:
        if not future.is_done:
            raise TimeoutError(f"output not acknowledged within {timeout} s")
        if future.exception is not None:
            raise future.exception


def next_offsets(records: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(recs[-1].offset + 1, "", -1) for tp, recs in records.items() if recs}


class Watchdog:
    """Ends the process if a guarded call overruns, or a drain its deadline: a restart beats a hang.

    One daemon thread checks two deadlines: the current guarded call's and, once
    a stop was requested, the drain's. State is set by plain attribute
    assignment (no lock), so :meth:`final_deadline` is safe in a signal handler.
    The exit is ``os._exit`` because the main thread is the one that is stuck.
    """

    def __init__(self) -> None:
        self._call: tuple[float, str] | None = None
        self._drain_until: float | None = None
        threading.Thread(target=self._run, name="kafka-watchdog", daemon=True).start()

    @contextmanager
    def guard(self, name: str, seconds: float) -> Iterator[None]:
        self._call = (time.monotonic() + seconds, name)
        try:
            yield
        finally:
            self._call = None

    def final_deadline(self, seconds: float) -> None:
        self._drain_until = time.monotonic() + seconds

    def _run(self) -> None:
        while True:
            time.sleep(0.2)
            now, call, drain = time.monotonic(), self._call, self._drain_until
            if call is not None and now > call[0]:
                self._exit(f"Kafka call {call[1]} did not return in time")
            if drain is not None and now > drain:
                self._exit("drain did not finish within --drain-timeout")

    @staticmethod
    def _exit(why: str) -> None:
        log.critical("watchdog: exiting", extra={"reason": why, "exit_code": WATCHDOG_EXIT})
        logging.shutdown()
        os._exit(WATCHDOG_EXIT)
