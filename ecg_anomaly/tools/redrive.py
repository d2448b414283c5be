"""``ecg-anomaly redrive``: send dead letters back to the topic they came from, once their cause is fixed.

Only the dead letters present when the command starts are considered: a
re-sent record that fails again lands in the dead-letter topic after that
point and is left for a later run (otherwise a worker still rejecting it and
this command would feed each other forever). A consumer group (default
``ecg-dlq-redrive``) remembers how far a run got, so running it again sends
only newer dead letters. Re-sent records keep their key, value, timestamp and
headers, minus the ``ecg.dlq.*`` ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.base.kafka import CONNECTION_OPTIONS
from ecg_anomaly.base.options import add_options, resolve
from ecg_anomaly.schemas import messages as m


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, CONNECTION_OPTIONS)
    parser.add_argument("--dlq", default="ecg.beats.dlq", help="dead-letter topic (default: %(default)s)")
    parser.add_argument(
        "--reason", action="append", choices=m.DEAD_LETTER_REASONS, help="only this reason (repeatable)"
    )
    parser.add_argument("--to", help="target topic (default: each record's original topic, ecg.dlq.topic)")
    parser.add_argument(
        "--group", default="ecg-dlq-redrive", help="consumer group remembering progress (%(default)s)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be sent; send and commit nothing"
    )
    parser.set_defaults(func=run)


@dataclass
class RedriveResult:
    sent: Counter[str] = field(default_factory=Counter)  # reason → records re-sent
    skipped: int = 0  # another reason, or no topic to send to
    targets: set[str] = field(default_factory=set)
    futures: list[Any] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    bootstrap = resolve(CONNECTION_OPTIONS, args, os.environ)["bootstrap_servers"]
    try:
        result = redrive(bootstrap, args.dlq, set(args.reason or ()), args.to, args.group, args.dry_run)
    except KafkaError as exc:
        raise EcgAnomalyError(f"cannot redrive {args.dlq} at {bootstrap}: {exc!r}") from exc
    verb = "would re-send" if args.dry_run else "re-sent"
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(result.sent.items())) or "none"
    print(
        f"redrive: {verb} {sum(result.sent.values()):,} dead letters ({reasons}) to "
        f"{', '.join(sorted(result.targets)) or '-'}; skipped {result.skipped:,}",
        file=sys.stderr,
    )
    return 0


def redrive(
    bootstrap: str, dlq: str, reasons: set[str], to: str | None, group: str, dry_run: bool = False
) -> RedriveResult:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id="ecg-redrive",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        allow_auto_create_topics=False,
    )
    producer = None if dry_run else KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    result = RedriveResult()
    try:
        partitions = consumer.partitions_for_topic(dlq)
        if not partitions:
            raise EcgAnomalyError(f"topic {dlq} does not exist at {bootstrap}")
        assigned = [TopicPartition(dlq, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        end = consumer.end_offsets(assigned)
        pending = {tp for tp in assigned if consumer.position(tp) < end[tp]}
        while pending:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for record in records:
                    if record.offset < end[tp]:
                        _one(record, reasons, to, producer, result)
            pending = {tp for tp in pending if consumer.position(tp) < end[tp]}
        if producer is not None:
            producer.flush(timeout=60)
            failed = [f.exception for f in result.futures if f.failed()]
            if failed:  # commit nothing: the next run sends them again
                raise EcgAnomalyError(f"{len(failed)} records were not re-sent: {failed[0]!r}")
            consumer.commit({tp: OffsetAndMetadata(end[tp], "", -1) for tp in assigned})
        return result
    finally:
        consumer.close()
        if producer is not None:
            with contextlib.suppress(KafkaError):  # a failed flush above has already raised
                producer.close(timeout=10)


def _one(record: Any, reasons: set[str], to: str | None, producer: Any, result: RedriveResult) -> None:
    headers = record.headers or []
    reason = m.header(headers, m.DLQ_REASON) or ""
    target = to or m.header(headers, m.DLQ_TOPIC)
    if (reasons and reason not in reasons) or not target:
        result.skipped += 1
        return
    kept = [(key, value) for key, value in headers if not key.startswith(m.DLQ_HEADER_PREFIX)]
    if producer is not None:
        result.futures.append(
            producer.send(
                target, key=record.key, value=record.value, headers=kept, timestamp_ms=record.timestamp
            )
        )
    result.sent[reason] += 1
    result.targets.add(target)
