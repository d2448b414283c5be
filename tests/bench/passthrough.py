"""The ceiling: a bare consume → produce passthrough, run as its own process like the worker.

Every input record is forwarded unchanged (key, value, headers) to the output
topic; no decoding, no scoring. The ``worker`` variant uses the worker's own
client (confluent-kafka), built by the worker's ``make_consumer`` and
``make_producer`` with the worker's default settings, and its loop shape: take
up to ``--max-batch`` fetched records, send them, commit once the outputs of
that batch and every earlier one are acknowledged (:mod:`ecg_anomaly.worker.inflight`).
The ``kafka-python`` variant is the worker's previous client and loop shape
(poll, send, flush, commit asynchronously), kept to show what switching moved.

Prints one JSON line: ``{"beats": ..., "beats_per_s": ...}``.
"""

from __future__ import annotations

import argparse
import json
import time

from tests.bench.common import drain_rate


def _worker_client(args: argparse.Namespace) -> list[tuple[float, float]]:
    from ecg_anomaly.worker.broker_link import BrokerLink
    from ecg_anomaly.worker.clients import admin_config, make_consumer, make_producer, partitions
    from ecg_anomaly.worker.delivery import IN_FLIGHT_BATCHES
    from ecg_anomaly.worker.inflight import Batch, InFlight, Offsets
    from ecg_anomaly.worker.settings import configure, load_settings
    from ecg_anomaly.worker.topic_limits import OutputLimits, admin_reader

    parser = argparse.ArgumentParser()
    configure(parser)
    flags = ["--model", "unused", "--bootstrap-servers", args.bootstrap, "--input-topic", args.topic]
    flags += ["--group-id", args.group, *args.worker_flags]
    settings = load_settings(parser.parse_args(flags), environ={})
    consumer = make_consumer(settings, BrokerLink(), lambda _error, _partitions: None)
    limits = OutputLimits([args.out_topic], admin_reader(admin_config(settings)))
    limits.refresh()
    producer = make_producer(settings, limits.producer_bounds())  # as the worker makes its own
    consumer.subscribe([args.topic])
    in_flight = InFlight(IN_FLIGHT_BATCHES * settings.max_batch)
    samples, consumed, acked = [(time.monotonic(), 0.0)], 0, [0]
    while consumed < args.count:
        messages = consumer.consume(settings.max_batch, 0)
        if not messages:
            first_message = consumer.poll(settings.max_wait_ms / 1000)
            messages = [first_message, *consumer.consume(settings.max_batch - 1, 0)] if first_message else []
        first: Offsets = {}
        after: Offsets = {}
        for msg in messages:
            if msg.error() is not None:
                raise RuntimeError(msg.error())
            tp = (msg.topic(), msg.partition())
            first.setdefault(tp, msg.offset())
            after[tp] = msg.offset() + 1
        if messages:
            size = len(messages)
            batch = Batch(first, after, size, size, lambda size=size: acked.append(acked.pop() + size))
            in_flight.add(batch)
            for msg in messages:
                while True:
                    try:
                        producer.produce(
                            args.out_topic,
                            msg.value(),
                            msg.key(),
                            headers=msg.headers(),
                            on_delivery=batch.delivered,
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
            consumed += size
        producer.poll(0)
        while True:
            offsets, failed = in_flight.retire()
            if failed is not None:
                raise RuntimeError(f"output not acknowledged: {failed.error}")
            if offsets:
                consumer.commit(offsets=partitions(offsets), asynchronous=True)
                samples.append((time.monotonic(), float(acked[0])))
            if not in_flight.full():
                break
            producer.poll(0.05)
    producer.flush(30)
    in_flight.retire()
    samples.append((time.monotonic(), float(acked[0])))
    consumer.close()
    return samples


def _kafka_python(args: argparse.Namespace) -> list[tuple[float, float]]:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_wait_ms=20,
        max_poll_records=1024,
    )
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=100,
        batch_size=256 * 1024,
    )
    samples, consumed = [(time.monotonic(), 0.0)], 0
    while consumed < args.count:
        records = consumer.poll(timeout_ms=100, max_records=1024)
        if not records:
            continue
        futures = [
            producer.send(args.out_topic, value=r.value, key=r.key, headers=r.headers or [])
            for recs in records.values()
            for r in recs
        ]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=0)  # raises the failure, if any
        consumer.commit_async(
            {tp: OffsetAndMetadata(recs[-1].offset + 1, "", -1) for tp, recs in records.items()}
        )
        consumed += len(futures)
        samples.append((time.monotonic(), float(consumed)))
    producer.close(timeout=5)
    consumer.close(autocommit=False, timeout_ms=5000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=("worker", "kafka-python"), default="worker")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True, help="stop after this many records")
    parser.add_argument("worker_flags", nargs="*", help="worker client: worker flags after --")
    args = parser.parse_args()
    samples = (_kafka_python if args.client == "kafka-python" else _worker_client)(args)
    print(json.dumps({"beats": args.count, "beats_per_s": round(drain_rate(samples, samples[-1][1]))}))


if __name__ == "__main__":
    main()
