"""The ceiling: a bare consume → produce passthrough, run as its own process like the worker.

Every input record is forwarded unchanged (key, value, headers) to the output
topic; no decoding, no scoring. The kafka-python variant uses the worker's own
client construction (``make_consumer``/``make_producer`` with the worker's
default settings) and its own loop shape: poll up to ``--max-batch`` records,
send, wait for every acknowledgement, then commit asynchronously. The
confluent-kafka variant does the same with librdkafka and equivalent settings,
to show what a different client could move on the same broker.

Prints one JSON line: ``{"beats": ..., "beats_per_s": ...}``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from tests.bench.common import drain_rate


def _kafka_python(args: argparse.Namespace) -> list[tuple[float, float]]:
    from worker.events import OutRecord
    from worker.kafka_io import AssignmentTracker, make_consumer, make_producer, next_offsets, send_all
    from worker.settings import configure, load_settings

    parser = argparse.ArgumentParser()
    configure(parser)
    flags = ["--model", "unused", "--bootstrap-servers", args.bootstrap, "--input-topic", args.topic]
    flags += ["--group-id", args.group, *args.worker_flags]
    settings = load_settings(parser.parse_args(flags), environ={})
    consumer = make_consumer(settings, AssignmentTracker())
    producer = make_producer(settings)
    samples, consumed = [(time.monotonic(), 0.0)], 0
    while consumed < args.count:
        records = consumer.poll(timeout_ms=settings.max_wait_ms, max_records=settings.max_batch)
        if not records:
            continue
        out = [
            OutRecord(args.out_topic, r.key, r.value, r.headers or [])
            for recs in records.values()
            for r in recs
        ]
        send_all(producer, out, settings.kafka_timeout)
        consumer.commit_async(next_offsets(records))
        consumed += len(out)
        samples.append((time.monotonic(), float(consumed)))
    producer.close(timeout=5)
    consumer.close(autocommit=False, timeout_ms=5000)
    return samples


def _confluent(args: argparse.Namespace) -> list[tuple[float, float]]:
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 20,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
        }
    )
    consumer.subscribe([args.topic])
    failures: list[Any] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(error)

    samples, consumed = [(time.monotonic(), 0.0)], 0
    while consumed < args.count:
        messages = consumer.consume(num_messages=1024, timeout=0.1)
        if not messages:
            continue
        for msg in messages:
            if msg.error() is not None:
                raise RuntimeError(msg.error())
            producer.produce(
                args.out_topic, msg.value(), msg.key(), headers=msg.headers(), on_delivery=delivered
            )
        if producer.flush(30) or failures:
            raise RuntimeError(f"outputs not acknowledged: {failures[:1]}")
        consumer.commit(asynchronous=True)
        consumed += len(messages)
        samples.append((time.monotonic(), float(consumed)))
    consumer.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=("kafka-python", "confluent-kafka"), default="kafka-python")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True, help="stop after this many records")
    parser.add_argument("worker_flags", nargs="*", help="kafka-python: worker flags after --")
    args = parser.parse_args()
    samples = (_kafka_python if args.client == "kafka-python" else _confluent)(args)
    print(json.dumps({"beats": args.count, "beats_per_s": round(drain_rate(samples, samples[-1][1]))}))


if __name__ == "__main__":
    main()
