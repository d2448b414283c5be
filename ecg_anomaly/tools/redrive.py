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
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.base.kafka import (
    CONNECTION_OPTIONS,
    ErrorLog,
    KafkaConnection,
    explain,
    quiet_config,
    topic_partitions,
    watermarks,
)
from ecg_anomaly.base.options import Option, add_options, resolve
from ecg_anomaly.schemas import messages as m

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

CLIENT_ID = "ecg-redrive"
FLUSH_TIMEOUT = 60.0  # seconds for the re-sent records to be acknowledged

OPTIONS: tuple[Option, ...] = (
    Option("dlq", None, "ecg.beats.dlq", "dead-letter topic"),
    Option(
        "reason",
        None,
        (),
        "only this reason (repeatable)",
        choices=m.DEAD_LETTER_REASONS,
        kind="list",
        default_text="every reason",
    ),
    Option("to", None, "", "target topic", default_text="each record's original topic, ecg.dlq.topic"),
    Option("group", None, "ecg-dlq-redrive", "consumer group remembering progress"),
    Option("dry_run", None, False, "count what would be sent; send and commit nothing", kind="switch"),
)

# Offsets are committed by hand, once every re-sent record is acknowledged. The end-of-partition
# event tells when a partition has nothing more to read (its last records may be transaction markers).
CONSUMER_SETTINGS: dict[str, object] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    "enable.partition.eof": True,
    "fetch.queue.backoff.ms": 50,
}
PRODUCER_SETTINGS: dict[str, object] = {"acks": "all", "linger.ms": 5, "partitioner": "murmur2_random"}


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, CONNECTION_OPTIONS)
    add_options(parser, OPTIONS)
    parser.set_defaults(func=run)


@dataclass
class RedriveResult:
    sent: Counter[str] = field(default_factory=Counter)  # reason → records re-sent
    skipped: int = 0  # another reason, or no topic to send to
    targets: set[str] = field(default_factory=set)
    acknowledged: int = 0
    failed: int = 0
    first_error: str | None = None

    def on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        if error is None:
            self.acknowledged += 1
            return
        self.failed += 1
        self.first_error = self.first_error or explain([error])


def run(args: argparse.Namespace) -> int:
    values = resolve((*OPTIONS, *CONNECTION_OPTIONS), args, os.environ)
    connection = KafkaConnection.from_values(values, os.environ)
    dry_run = values["dry_run"]
    result = redrive(
        connection, values["dlq"], set(values["reason"]), values["to"] or None, values["group"], dry_run
    )
    verb = "would re-send" if dry_run else "re-sent"
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(result.sent.items())) or "none"
    print(
        f"redrive: {verb} {sum(result.sent.values()):,} dead letters ({reasons}) to "
        f"{', '.join(sorted(result.targets)) or '-'}; skipped {result.skipped:,}",
        file=sys.stderr,
    )
    return 0


def redrive(
    connection: KafkaConnection,
    dlq: str,
    reasons: set[str],
    to: str | None,
    group: str,
    dry_run: bool = False,
) -> RedriveResult:
    """Re-send the dead letters present now; commit ``group``'s progress once all are acknowledged."""
    partitions = topic_partitions(connection, CLIENT_ID, dlq)
    run = _Redrive(connection, dlq, reasons, to, group, dry_run)
    try:
        return run.all(partitions)
    finally:
        run.consumer.close()


class _Redrive:
    """One run: a consumer in ``group`` reading the dead-letter topic, a producer re-sending."""

    def __init__(
        self,
        connection: KafkaConnection,
        dlq: str,
        reasons: set[str],
        to: str | None,
        group: str,
        dry_run: bool,
    ) -> None:
        from confluent_kafka import Consumer, Producer

        self.connection, self.dlq, self.reasons, self.to, self.group = connection, dlq, reasons, to, group
        self.errors = ErrorLog()
        config = quiet_config(connection, CLIENT_ID, self.errors)
        self.consumer = Consumer({**config, **CONSUMER_SETTINGS, "group.id": group})
        self.producer = None if dry_run else Producer({**config, **PRODUCER_SETTINGS})
        self.result = RedriveResult()

    def all(self, partitions: int) -> RedriveResult:
        from confluent_kafka import KafkaException, TopicPartition

        marks = watermarks(self.consumer, self.dlq, partitions, self.connection.connect_timeout)
        try:
            committed = self.consumer.committed(
                [TopicPartition(self.dlq, p) for p in range(partitions)],
                timeout=self.connection.connect_timeout,
            )
        except KafkaException as exc:
            raise EcgAnomalyError(
                f"cannot read group {self.group}'s progress: {explain([exc.args[0]])}"
            ) from None
        start = {tp.partition: tp.offset if tp.offset >= 0 else marks[tp.partition][0] for tp in committed}
        end = {p: high for p, (_, high) in marks.items()}
        pending = {p for p in range(partitions) if start[p] < end[p]}
        self.consumer.assign([TopicPartition(self.dlq, p, start[p]) for p in sorted(pending)])
        reached = self._read(pending, end)
        if self.producer is None or not reached:
            return self.result
        self._wait_for_acknowledgements()
        try:
            self.consumer.commit(
                offsets=[TopicPartition(self.dlq, p, offset) for p, offset in reached.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            raise EcgAnomalyError(
                f"re-sent {sum(self.result.sent.values()):,} records but could not commit group "
                f"{self.group}'s progress ({explain([exc.args[0]])}): the next run sends them again"
            ) from None
        return self.result

    def _read(self, pending: set[int], end: dict[int, int]) -> dict[int, int]:
        """Re-send what lies below each partition's ``end``; the offset reached in each, to commit."""
        from confluent_kafka import KafkaError

        reached: dict[int, int] = {}
        timeout = self.connection.connect_timeout
        heard = time.monotonic()
        while pending:
            record = self.consumer.poll(0.5)
            if self.producer is not None:
                self.producer.poll(0)  # acknowledgements arrive here
            if record is None:
                if time.monotonic() - heard > timeout:
                    cause = explain(self.errors.errors) or "no records and no end of partition"
                    raise EcgAnomalyError(
                        f"no answer from Kafka at {self.connection.describe()} for {timeout:g} s: "
                        f"{cause}; nothing committed"
                    )
                continue
            heard = time.monotonic()
            partition, offset, error = record.partition(), record.offset(), record.error()
            if partition not in pending:
                continue
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise EcgAnomalyError(f"cannot read {self.dlq} [{partition}]: {explain([error])}")
            if error is None and offset < end[partition]:
                self._one(record)
            # Done with a partition at its end, or past the last record present at the start (the
            # records between may be transaction markers, never delivered).
            reached[partition] = min(offset if error is not None else offset + 1, end[partition])
            if error is not None or reached[partition] >= end[partition]:
                pending.discard(partition)
        return reached

    def _one(self, record: Message) -> None:
        headers = record.headers() or []
        reason = m.header(headers, m.DLQ_REASON) or ""
        target = self.to or m.header(headers, m.DLQ_TOPIC)
        if (self.reasons and reason not in self.reasons) or not target:
            self.result.skipped += 1
            return
        if self.producer is not None:
            kept = [(key, value) for key, value in headers if not key.startswith(m.DLQ_HEADER_PREFIX)]
            self._send(target, record, kept)
        self.result.sent[reason] += 1
        self.result.targets.add(target)

    def _send(self, target: str, record: Message, headers: list) -> None:
        from confluent_kafka import KafkaException

        assert self.producer is not None
        kind, timestamp = record.timestamp()
        while True:
            try:
                self.producer.produce(
                    target,
                    value=record.value(),
                    key=record.key(),
                    headers=headers,
                    timestamp=timestamp if kind else 0,  # 0: none recorded, the producer's clock
                    on_delivery=self.result.on_delivery,
                )
                return
            except BufferError:  # librdkafka's queue is full: take acknowledgements, then try again
                self.producer.poll(0.1)
            except KafkaException as exc:  # refused before sending (larger than message.max.bytes, ...)
                self.result.on_delivery(exc.args[0], None)
                return

    def _wait_for_acknowledgements(self) -> None:
        """Every re-sent record acknowledged, or an error: then nothing is committed and the next
        run sends them all again."""
        assert self.producer is not None
        unacknowledged = self.producer.flush(FLUSH_TIMEOUT)
        result = self.result
        if result.failed or unacknowledged:
            raise EcgAnomalyError(
                f"{result.failed + unacknowledged:,} of {sum(result.sent.values()):,} records were not "
                f"re-sent ({result.first_error or f'not acknowledged within {FLUSH_TIMEOUT:g} s'}); "
                "nothing committed"
            )
