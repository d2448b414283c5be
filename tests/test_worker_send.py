"""``send``, the one path that hands a batch's records to the producer, against a real broker: every
field arrives as given (the arguments go by position), a full local queue waits instead of losing
records, and a record the client refuses at once is reported with how many went before it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from ecg_anomaly.worker.delivery import send
from ecg_anomaly.worker.events import OutRecord
from tests.support.worker import read_topic

pytestmark = pytest.mark.kafka

STAMP = 1_700_000_000_000


def _records(topic: str, count: int) -> list[OutRecord]:
    return [
        OutRecord(
            topic,
            f"source-{i % 3}".encode(),
            b"value-%d" % i,
            [("content-type", b"text/plain"), ("n", str(i).encode())],
            STAMP + i if i % 2 else 0,  # 0: the producer stamps it
            i % 2,
        )
        for i in range(count)
    ]


def _delivered() -> tuple[list[Any], Callable[[Any, Any], None]]:
    answers: list[Any] = []
    return answers, lambda error, _message: answers.append(error)


def test_every_field_arrives_as_given(kafka_bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    answers, on_delivery = _delivered()
    records = _records(topic, 40)
    send(producer, records, on_delivery)
    assert producer.flush(30) == 0 and answers == [None] * 40
    got = {int(dict(r.headers)["n"]): r for r in read_topic(kafka_bootstrap, topic)}
    assert sorted(got) == list(range(40))
    for i, sent in enumerate(records):
        r = got[i]
        assert (r.key, r.value, r.partition, r.headers) == (sent.key, sent.value, i % 2, sent.headers)
        assert r.timestamp == STAMP + i if i % 2 else abs(r.timestamp - STAMP) > 10**9  # now, not 0


def test_a_full_local_queue_waits_and_loses_nothing(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "queue.buffering.max.messages": 7})
    answers, on_delivery = _delivered()
    send(producer, _records(topic, 100), on_delivery)  # BufferError after 7, 14, ...
    assert producer.flush(30) == 0 and answers == [None] * 100
    got = read_topic(kafka_bootstrap, topic)
    assert sorted(int(dict(r.headers)["n"]) for r in got) == list(range(100))
    for partition in (0, 1):  # in order within each partition
        ns = [int(dict(r.headers)["n"]) for r in got if r.partition == partition]
        assert ns == sorted(ns) and len(ns) == 50


def test_a_record_refused_at_once_is_reported_with_how_many_went_before_it(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 10_000})
    records = _records(topic, 10)
    records[6] = records[6]._replace(value=b"x" * 20_000)  # over message.max.bytes: refused in produce()
    answers, on_delivery = _delivered()
    with pytest.raises(KafkaException) as refused:
        send(producer, records, on_delivery)
    assert refused.value.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE and refused.value.args[1] == 6
    assert producer.flush(30) == 0 and answers == [None] * 6
