"""In-memory stand-ins for the worker's Kafka clients, for unit tests of its delivery parts.

They keep what the worker asked of them (``calls``, ``commits``); each test's producer decides
when the broker answers. Integration tests use the real broker instead.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition


class Transactions:
    """A producer: ``produce`` takes confluent-kafka's parameters in its order (the worker passes them
    by position) and hands each record to ``produced``; the transaction calls are recorded, and
    ``commit_transaction`` flushes first, as librdkafka."""

    calls: list[str]
    pending: list[Any]
    fail_commit: KafkaError | None

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        self.produced(topic, value, key, partition, callback or on_delivery)

    def produced(
        self, topic: str, value: bytes | None, key: bytes | None, partition: int, on_delivery: Any
    ) -> None:
        raise NotImplementedError

    def flush(self, _timeout: float = 0) -> int:
        raise NotImplementedError

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], _md: Any, _t: float) -> None:
        self.calls.append("offsets " + ",".join(f"{tp.partition}:{tp.offset}" for tp in offsets))

    def commit_transaction(self, _timeout: float) -> None:
        self.flush()
        if self.fail_commit is not None:
            raise KafkaException(self.fail_commit)
        self.calls.append("commit")

    def abort_transaction(self, _timeout: float) -> None:
        self.pending = []
        self.calls.append("abort")


class Consumer:
    """Records the offsets committed (at-least-once)."""

    def __init__(self) -> None:
        self.commits: list[list[tuple[int, int]]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])

    def consumer_group_metadata(self) -> object:
        return object()
