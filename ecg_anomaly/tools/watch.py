"""``ecg-anomaly watch``: follow the anomaly topic (or ``--dlq`` the dead letters), one readable line each.

Reads every partition without joining a consumer group (nothing is committed,
nothing is taken from the workers' groups) and with ``read_committed``, so an
exactly-once worker's aborted outputs never show. Never creates a topic.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any, TextIO

import orjson

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.base.kafka import CONNECTION_OPTIONS
from ecg_anomaly.base.options import add_options, resolve
from ecg_anomaly.schemas import messages as m
from ecg_anomaly.tools.faults import FAULT_HEADER

DEFAULT_ANOMALY_TOPIC = "ecg.anomalies"
DEFAULT_DLQ_TOPIC = "ecg.beats.dlq"
_MESSAGE_WIDTH = 90


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, CONNECTION_OPTIONS)
    parser.add_argument("--dlq", action="store_true", help=f"follow dead letters ({DEFAULT_DLQ_TOPIC})")
    parser.add_argument(
        "--topic",
        help=f"topic to follow (default: {DEFAULT_ANOMALY_TOPIC}, or {DEFAULT_DLQ_TOPIC} with --dlq)",
    )
    parser.add_argument(
        "--from-beginning", action="store_true", help="print what is already there, then follow"
    )
    parser.add_argument("--limit", type=int, help="exit after this many records")
    parser.add_argument(
        "--timeout", type=float, help="exit after this many seconds without a new record (default: never)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    topic = args.topic or (DEFAULT_DLQ_TOPIC if args.dlq else DEFAULT_ANOMALY_TOPIC)
    bootstrap = resolve(CONNECTION_OPTIONS, args, os.environ)["bootstrap_servers"]
    stopping: list[bool] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(True))
    try:
        return follow(bootstrap, topic, args.dlq, args.from_beginning, args.limit, args.timeout, stopping)
    except KafkaError as exc:
        raise EcgAnomalyError(f"cannot read {topic} from {bootstrap}: {exc}") from exc
    finally:
        signal.signal(signal.SIGINT, previous)


def follow(
    bootstrap: str,
    topic: str,
    dlq: bool,
    from_beginning: bool,
    limit: int | None,
    timeout: float | None,
    stopping: list[bool],
    out: TextIO | None = None,
) -> int:
    """Print records to ``out`` (stdout) until ``limit``, ``timeout`` s of silence, or ``stopping``."""
    from kafka import KafkaConsumer, TopicPartition

    out = out or sys.stdout

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="ecg-watch",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        allow_auto_create_topics=False,
        fetch_max_wait_ms=200,
    )
    try:
        last = time.monotonic()
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:  # not created yet (the worker creates outputs on first use)
            if stopping or (timeout is not None and time.monotonic() - last > timeout):
                print(f"watch: topic {topic} does not exist at {bootstrap}", file=sys.stderr)
                return 1
            time.sleep(0.5)
            partitions = consumer.partitions_for_topic(topic)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*assigned)
        plural = "s" if len(assigned) != 1 else ""
        print(f"watch: following {topic} at {bootstrap} ({len(assigned)} partition{plural})", file=sys.stderr)
        seen = 0
        while not stopping:
            for records in consumer.poll(timeout_ms=250).values():
                for record in records:
                    print(format_dead_letter(record) if dlq else format_anomaly(record), file=out, flush=True)
                    seen += 1
                    last = time.monotonic()
                    if limit is not None and seen >= limit:
                        return 0
            if timeout is not None and time.monotonic() - last > timeout:
                return 0
        return 0
    finally:
        consumer.close()


def format_anomaly(record: Any) -> str:
    """``beat time  source  score > threshold (xratio)  severity  where  beat/label  input coordinates``."""
    try:
        event = m.decode_event(record.value)
        where = event["error_location"]
        line = (
            f"{event['beat_time']}  {event['source_id']:<12} "
            f"score {event['score']:.4f} > {event['threshold']:.4f} (x{event['ratio']:.2f})  "
            f"{event['severity']:<8} "
            f"samples {where['window_start']}-{where['window_end'] - 1} "
            f"({where['window_share']:.0%} of the error), peak at {where['peak_sample']}"
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return f"unreadable event at {record.topic} {record.partition}@{record.offset}: {exc!r}"
    extra = [f"beat {event['beat_id']}"] if "beat_id" in event else []
    if "label" in event:
        extra.append(f"label {event['label']}")
    source = event.get("input", {})
    extra.append(f"[{source.get('topic')} {source.get('partition')}@{source.get('offset')}]")
    return line + "  " + "  ".join(extra)


def format_dead_letter(record: Any) -> str:
    """``failed at  key  reason  message  [input coordinates, size]``, plus the replay's expectation
    when the worker gave another reason."""
    headers = record.headers
    reason = m.header(headers, m.DLQ_REASON) or "(no reason header)"
    message = (m.header(headers, m.DLQ_MESSAGE) or "").replace("\n", " ")
    if len(message) > _MESSAGE_WIDTH:
        message = message[: _MESSAGE_WIDTH - 3] + "..."
    key = record.key.decode("utf-8", "replace") if record.key else "-"
    size = len(record.value) if record.value is not None else 0
    line = (
        f"{m.header(headers, m.DLQ_FAILED_AT) or '-'}  {key:<12} {reason:<20} {message}  "
        f"[{m.header(headers, m.DLQ_TOPIC)} {m.header(headers, m.DLQ_PARTITION)}@"
        f"{m.header(headers, m.DLQ_OFFSET)}, {size:,} bytes]"
    )
    expected = m.header(headers, FAULT_HEADER)
    if expected is not None and expected != reason:
        line += f"  (replay expected {expected})"
    return line
