"""The foundation's promise: a real broker that keeps per-key order and honours transactions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.kafka


def _consume(
    bootstrap: str, topic: str, group: str, expected: int, isolation: str = "read_uncommitted"
) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation,
        fetch_max_wait_ms=50,
        consumer_timeout_ms=3000,
    )
    records = []
    try:
        for record in consumer:
            records.append(record)
            if len(records) >= expected + 50:  # more than expected: stop, the assertion will say so
                break
    finally:
        consumer.close(timeout_ms=5000)
    return records


def test_keyed_records_all_arrive_in_per_key_order(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    sent: dict[bytes, list[int]] = defaultdict(list)
    for i in range(1000):
        key = f"patient-{i % 17}".encode()
        producer.send(topic, key=key, value=str(i).encode())
        sent[key].append(i)
    producer.flush(timeout=30)
    producer.close()

    records = _consume(kafka_bootstrap, topic, group_factory(), expected=1000)

    assert len(records) == 1000
    received: dict[bytes, list[int]] = defaultdict(list)
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    for record in records:
        received[record.key].append(int(record.value))
        partitions_of_key[record.key].add(record.partition)
    assert received == sent  # every record, and each key's records in send order
    assert all(len(p) == 1 for p in partitions_of_key.values())
    assert {r.partition for r in records} == {0, 1, 2}


def test_aborted_transaction_is_invisible_to_read_committed(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=group_factory("tx"))
    producer.init_transactions()

    producer.begin_transaction()
    for i in range(10):
        producer.send(topic, key=b"k", value=f"aborted-{i}".encode())
    producer.flush()
    producer.abort_transaction()

    producer.begin_transaction()
    for i in range(10):
        producer.send(topic, key=b"k", value=f"committed-{i}".encode())
    producer.commit_transaction()
    producer.close()

    committed = _consume(kafka_bootstrap, topic, group_factory(), 10, isolation="read_committed")
    assert [r.value.decode() for r in committed] == [f"committed-{i}" for i in range(10)]

    # The aborted records are really in the log: a read_uncommitted reader sees both batches.
    everything = _consume(kafka_bootstrap, topic, group_factory(), 20)
    assert sorted(r.value.decode() for r in everything) == sorted(
        [f"aborted-{i}" for i in range(10)] + [f"committed-{i}" for i in range(10)]
    )
