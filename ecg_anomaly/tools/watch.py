"""``ecg-anomaly watch``: follow the anomaly topic (``--dlq`` the dead letters, ``--alerts`` the alert
episodes), one readable line each.

Reads every partition without joining a consumer group (nothing is committed,
nothing is taken from the workers' groups) and with ``read_committed``, so an
exactly-once worker's aborted outputs never show. Never creates a topic. ``--web`` serves the live
page (:mod:`ecg_anomaly.tools.live_page`) instead of printing lines.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

import orjson

from ecg_anomaly.base.errors import ConfigError, EcgAnomalyError
from ecg_anomaly.base.kafka import (
    CONNECTION_OPTIONS,
    ErrorLog,
    KafkaConnection,
    explain,
    quiet_config,
    topic_partitions,
    watermarks,
)
from ecg_anomaly.base.options import Option, add_options, finite, integer, positive, resolve
from ecg_anomaly.schemas import messages as m
from ecg_anomaly.tools import live_page
from ecg_anomaly.tools.faults import FAULT_HEADER

if TYPE_CHECKING:
    from confluent_kafka import Message

DEFAULT_ANOMALY_TOPIC = "ecg.anomalies"
DEFAULT_DLQ_TOPIC = "ecg.beats.dlq"
DEFAULT_ALERTS_TOPIC = "ecg.alerts"
CLIENT_ID = "ecg-watch"
_MESSAGE_WIDTH = 90

OPTIONS: tuple[Option, ...] = (
    Option("dlq", None, False, f"follow dead letters ({DEFAULT_DLQ_TOPIC})", kind="switch"),
    Option(
        "alerts",
        None,
        False,
        f"follow alert episodes ({DEFAULT_ALERTS_TOPIC}; the worker's --episodes)",
        kind="switch",
    ),
    Option(
        "topic",
        None,
        None,
        "topic to follow",
        default_text=(
            f"{DEFAULT_ANOMALY_TOPIC}, {DEFAULT_DLQ_TOPIC} with --dlq, {DEFAULT_ALERTS_TOPIC} with --alerts"
        ),
    ),
    Option("from_beginning", None, False, "print what is already there, then follow", kind="switch"),
    Option(
        "limit",
        None,
        None,
        "exit after this many records",
        integer,
        check=positive,
        check_text="a positive integer",
        default_text="(none)",
    ),
    Option(
        "timeout",
        None,
        None,
        "exit after this many seconds without a new record",
        finite,
        check=positive,
        check_text="a positive number",
        default_text="never",
    ),
)

# librdkafka's consumer needs a group id, even one it never joins: watch only assigns partitions
# and never commits, so no group is joined and nothing is taken from the workers' groups.
CONSUMER_SETTINGS: dict[str, object] = {
    "group.id": CLIENT_ID,
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "isolation.level": "read_committed",
    "fetch.wait.max.ms": 200,
    "fetch.queue.backoff.ms": 50,  # librdkafka's default 1,000 ms would delay lines behind a burst
}


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, CONNECTION_OPTIONS)
    add_options(parser, OPTIONS)
    add_options(parser, live_page.WATCH_OPTIONS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    values = resolve((*OPTIONS, *CONNECTION_OPTIONS, *live_page.WATCH_OPTIONS), args, os.environ)
    if values["dlq"] and values["alerts"]:
        raise ConfigError("--dlq and --alerts follow different topics: choose one")
    live_page.check_watch_values(values)
    connection = KafkaConnection.from_values(values, os.environ)
    mode = "dlq" if values["dlq"] else "alerts" if values["alerts"] else "anomalies"
    topic = values["topic"] or DEFAULT_TOPICS[mode]
    stopping: list[bool] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stopping.append(True))
    try:
        if values["web"]:
            return live_page.serve(connection, topic, values, stopping)
        return follow(
            connection,
            topic,
            FORMATS[mode],
            values["from_beginning"],
            values["limit"],
            values["timeout"],
            stopping,
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def follow(
    connection: KafkaConnection,
    topic: str,
    format_record: Callable[[Message], str],
    from_beginning: bool,
    limit: int | None,
    timeout: float | None,
    stopping: list[bool],
    out: TextIO | None = None,
) -> int:
    """Print records to ``out`` (stdout) until ``limit``, ``timeout`` s of silence, or ``stopping``.

    An unreachable cluster or a missing topic is one line (never waited for in silence). The
    start offsets are read from the broker before the first line, so every record written after
    "following" is printed.
    """
    from confluent_kafka import Consumer, TopicPartition

    out = out or sys.stdout
    partitions = topic_partitions(connection, CLIENT_ID, topic)
    errors = ErrorLog()
    consumer = Consumer({**quiet_config(connection, CLIENT_ID, errors), **CONSUMER_SETTINGS})
    try:
        marks = watermarks(consumer, topic, partitions, connection.connect_timeout)
        start = {p: low if from_beginning else high for p, (low, high) in marks.items()}
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
        plural = "s" if partitions != 1 else ""
        print(
            f"watch: following {topic} at {connection.describe()} ({partitions} partition{plural})",
            file=sys.stderr,
        )
        seen = 0
        last = time.monotonic()
        while not stopping:
            record = consumer.poll(0.25)
            if record is not None:
                if record.error() is not None:  # a deleted topic, a missing ACL: not worth waiting for
                    raise EcgAnomalyError(f"cannot read {topic}: {explain([record.error()])}")
                print(format_record(record), file=out, flush=True)
                seen += 1
                last = time.monotonic()
                if limit is not None and seen >= limit:
                    return 0
            if timeout is not None and time.monotonic() - last > timeout:
                return 0
        return 0
    finally:
        consumer.close()


def format_anomaly(record: Message) -> str:
    """``beat time  source  score > threshold (xratio)  severity  where  beat/label  input coordinates``."""
    try:
        event = m.decode_event(record.value())
        where = event["error_location"]
        line = (
            f"{event['beat_time']}  {event['source_id']:<12} "
            f"score {event['score']:.4f} > {event['threshold']:.4f} (x{event['ratio']:.2f})  "
            f"{event['severity']:<8} "
            f"samples {where['window_start']}-{where['window_end'] - 1} "
            f"({where['window_share']:.0%} of the error), peak at {where['peak_sample']}"
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return f"unreadable event at {record.topic()} {record.partition()}@{record.offset()}: {exc!r}"
    extra = [f"beat {event['beat_id']}"] if "beat_id" in event else []
    if "label" in event:
        extra.append(f"label {event['label']}")
    source = event.get("input", {})
    extra.append(f"[{source.get('topic')} {source.get('partition')}@{source.get('offset')}]")
    return line + "  " + "  ".join(extra)


def format_dead_letter(record: Message) -> str:
    """``failed at  key  reason  message  [input coordinates, size]``, plus the replay's expectation
    when the worker gave another reason."""
    headers = record.headers()
    reason = m.header(headers, m.DLQ_REASON) or "(no reason header)"
    message = (m.header(headers, m.DLQ_MESSAGE) or "").replace("\n", " ")
    if len(message) > _MESSAGE_WIDTH:
        message = message[: _MESSAGE_WIDTH - 3] + "..."
    key = record.key().decode("utf-8", "replace") if record.key() else "-"
    size = len(record.value() or b"")
    line = (
        f"{m.header(headers, m.DLQ_FAILED_AT) or '-'}  {key:<12} {reason:<20} {message}  "
        f"[{m.header(headers, m.DLQ_TOPIC)} {m.header(headers, m.DLQ_PARTITION)}@"
        f"{m.header(headers, m.DLQ_OFFSET)}, {size:,} bytes]"
    )
    expected = m.header(headers, FAULT_HEADER)
    if expected is not None and expected != reason:
        line += f"  (replay expected {expected})"
    return line


def format_alert(record: Message) -> str:
    """``last beat time  source  kind #sequence  anomalous/total beats since first  peak score severity
    model  episode id  [input coordinates of the opening beat]``."""
    try:
        alert = m.decode_event(record.value())
        kind = alert["kind"] + (f" ({alert['closed_reason']})" if "closed_reason" in alert else "")
        opened = alert["opened_by"]
        return (
            f"{alert['last_beat_time']}  {alert['source_id']:<12} {kind:<18} #{alert['sequence']:<3} "
            f"{alert['anomalous_beats']}/{alert['total_beats']} beats anomalous since "
            f"{alert['first_beat_time']}  peak {alert['peak_score']:.4f} {alert['peak_severity']:<8} "
            f"model {alert['model_version']}  episode {alert['episode_id']}  "
            f"[opened by {opened['topic']} {opened['partition']}@{opened['offset']}]"
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return f"unreadable alert at {record.topic()} {record.partition()}@{record.offset()}: {exc!r}"


DEFAULT_TOPICS = {
    "anomalies": DEFAULT_ANOMALY_TOPIC,
    "dlq": DEFAULT_DLQ_TOPIC,
    "alerts": DEFAULT_ALERTS_TOPIC,
}
FORMATS: dict[str, Callable[[Message], str]] = {
    "anomalies": format_anomaly,
    "dlq": format_dead_letter,
    "alerts": format_alert,
}
