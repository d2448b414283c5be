"""The live page's view of the anomaly topic: flagged beats per source and the latest events.

A thread follows every partition of the topic the way ``watch`` does: assigned, never in a group
(nothing committed, nothing taken from the workers' groups), ``read_committed`` (an exactly-once
worker's aborted outputs never count). It starts at the end of the topic (or its beginning), so
the counts are of the events published while the page runs.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from ecg_anomaly.base.kafka import (
    ErrorLog,
    KafkaConnection,
    explain,
    quiet_config,
    topic_partitions,
    watermarks,
)
from ecg_anomaly.schemas import messages as m

CLIENT_ID = "ecg-live-page-events"
CONSUMER_SETTINGS: dict[str, object] = {
    "group.id": CLIENT_ID,  # librdkafka wants one; never joined
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "isolation.level": "read_committed",
    "fetch.wait.max.ms": 200,
    "fetch.queue.backoff.ms": 50,
}


@dataclass
class SourceCounts:
    flagged: int = 0
    severities: Counter[str] = field(default_factory=Counter)
    labelled_abnormal: int = 0  # flagged beats whose own label said "anomaly"
    labelled: int = 0  # flagged beats that carried a label at all
    last_beat_time: str = ""


class LiveEvents:
    """Counts and the latest ``keep`` events, updated by the follower and read by the page's threads."""

    def __init__(self, keep: int) -> None:
        self._lock = threading.Lock()
        self._latest: deque[dict[str, Any]] = deque(maxlen=keep)
        self._sources: dict[str, SourceCounts] = {}
        self.total = 0
        self.unreadable = 0

    def add(self, value: bytes | None) -> None:
        try:
            event = m.decode_event(value or b"")
            source = str(event["source_id"])
            severity = str(event["severity"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            with self._lock:
                self.unreadable += 1
            return
        with self._lock:
            self.total += 1
            self._latest.append(event)
            counts = self._sources.setdefault(source, SourceCounts())
            counts.flagged += 1
            counts.severities[severity] += 1
            counts.last_beat_time = str(event.get("beat_time", ""))
            if "label" in event:
                counts.labelled += 1
                counts.labelled_abnormal += event["label"] == "anomaly"

    def latest(self) -> list[dict[str, Any]]:
        """The latest events, newest first."""
        with self._lock:
            return list(reversed(self._latest))

    def sources(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The ``limit`` most flagged sources, most flagged first, and how many sources were flagged."""
        with self._lock:
            rows = [
                {
                    "source_id": source,
                    "flagged": c.flagged,
                    "severities": {s: c.severities.get(s, 0) for s in m.SEVERITIES},
                    "labelled": c.labelled,
                    "labelled_abnormal": c.labelled_abnormal,
                    "last_beat_time": c.last_beat_time,
                }
                for source, c in self._sources.items()
            ]
        return sorted(rows, key=lambda row: (-row["flagged"], row["source_id"]))[:limit], len(rows)


class EventFollower:
    """Follows ``topic`` into a :class:`LiveEvents` on a thread until :meth:`stop`.

    The topic and its offsets are read in the constructor, so a missing topic or an unreachable
    cluster is one line before anything is served. A read error later (the topic deleted, an ACL
    removed) ends the thread and is kept in :attr:`failure`.
    """

    def __init__(
        self, connection: KafkaConnection, topic: str, events: LiveEvents, from_beginning: bool
    ) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.topic = topic
        self.events = events
        self.failure: str | None = None
        self._stop = threading.Event()
        partitions = topic_partitions(connection, CLIENT_ID, topic)
        self._consumer = Consumer({**quiet_config(connection, CLIENT_ID, ErrorLog()), **CONSUMER_SETTINGS})
        try:
            marks = watermarks(self._consumer, topic, partitions, connection.connect_timeout)
        except BaseException:
            self._consumer.close()
            raise
        start = {p: low if from_beginning else high for p, (low, high) in marks.items()}
        self._consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
        self._thread = threading.Thread(target=self._run, name="live-page-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for record in self._consumer.consume(500, 0.25):
                if record.error() is not None:
                    self.failure = f"cannot read {self.topic}: {explain([record.error()])}"
                    return
                self.events.add(record.value())
