"""Offset-by-offset accounting of a worker run: did every input beat get exactly its outcome?

The checker reads the input topic and every output topic (scores, dead
letters, anomaly events) from the beginning, by default with
``read_committed`` so an exactly-once worker's aborted writes do not count.
Each input ``(partition, offset)`` is classified as scored normal, anomaly or
dead-lettered; inputs without an outcome are *missing*, inputs with more than
one are *duplicates*. For at-least-once runs, duplicates are allowed but must
be identical copies (same event id, same score), which ``differing`` counts.
The worker must run with a scores topic, so that every scored beat has a record.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ecg_anomaly.schemas import messages as m
from tests.support.artifact import load_test_split
from tests.support.worker import read_topic

Offset = tuple[int, int]


@dataclass(frozen=True)
class Outcome:
    """One output record for an input offset, kept small (soak runs check millions)."""

    kind: str  # "normal", "anomaly" or "dead_letter"
    reason: str | None  # the dead-letter reason code
    event_id: str | None
    digest: int  # hash of the whole record, so copies can be compared


@dataclass
class Verdict:
    """Counts of one run; ``passed`` applies the issue's invariant for the guarantee."""

    inputs: int = 0
    normal: int = 0
    anomaly: int = 0
    dead_lettered: int = 0
    missing: list[Offset] = field(default_factory=list)
    duplicates: int = 0  # input offsets with more than one outcome
    differing: int = 0  # of those, offsets whose copies are not identical (event id or content)
    event_mismatch: int = 0  # anomaly events not matching the anomalous scores one-to-one
    # at-least-once: events written in a batch whose score write the broker refused, for beats then
    # dead-lettered output_too_large on the retry (a failed batch's outputs that landed stay)
    events_then_too_large: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    outcomes: dict[Offset, list[Outcome]] = field(default_factory=dict, repr=False)

    def passed(self, exactly_once: bool) -> bool:
        if self.missing or self.differing or self.event_mismatch:
            return False
        return self.duplicates == 0 if exactly_once else True

    def counts(self) -> str:
        return (
            f"inputs={self.inputs} normal={self.normal} anomaly={self.anomaly} "
            f"dead_lettered={self.dead_lettered} missing={len(self.missing)} duplicates={self.duplicates}"
            + (f" differing={self.differing}" if self.differing else "")
            + (f" event_mismatch={self.event_mismatch}" if self.event_mismatch else "")
        )


def check(bootstrap: str, topics: dict[str, str], committed_only: bool = True) -> Verdict:
    """Classify every input offset of ``topics["input"]`` by the outcomes in the output topics."""
    inputs = {(r.partition, r.offset) for r in read_topic(bootstrap, topics["input"])}
    outcomes: dict[Offset, list[Outcome]] = defaultdict(list)
    for record in read_topic(bootstrap, topics["scores_topic"], committed_only=committed_only):
        score = orjson.loads(record.value)
        kind = "anomaly" if score["anomaly"] else "normal"
        outcome = Outcome(kind, None, score["event_id"], hash(record.value))
        outcomes[(score["input"]["partition"], score["input"]["offset"])].append(outcome)
    for record in read_topic(bootstrap, topics["dlq_topic"], committed_only=committed_only):
        h = dict(record.headers)
        reason = h[m.DLQ_REASON].decode()
        outcome = Outcome("dead_letter", reason, None, hash((reason, record.value)))
        outcomes[(int(h[m.DLQ_PARTITION]), int(h[m.DLQ_OFFSET]))].append(outcome)
    events: dict[Offset, set[str]] = defaultdict(set)
    for record in read_topic(bootstrap, topics["anomaly_topic"], committed_only=committed_only):
        event = orjson.loads(record.value)
        events[(event["input"]["partition"], event["input"]["offset"])].add(event["event_id"])

    v = Verdict(inputs=len(inputs), outcomes=dict(outcomes))
    v.missing = sorted(inputs - set(outcomes))
    reasons: dict[str, int] = defaultdict(int)
    for key, copies in outcomes.items():
        first = copies[0]
        if len(copies) > 1:
            v.duplicates += 1
            if len(set(copies)) != 1:
                v.differing += 1
        if first.kind == "dead_letter":
            v.dead_lettered += 1
            reasons[str(first.reason)] += 1
        elif first.kind == "anomaly":
            v.anomaly += 1
            if events.get(key) != {first.event_id}:
                v.event_mismatch += 1
        else:
            v.normal += 1
    for key in events:
        if key in outcomes and outcomes[key][0].reason == "output_too_large":
            v.events_then_too_large += 1
        elif key not in outcomes or outcomes[key][0].kind != "anomaly":
            v.event_mismatch += 1
    v.reasons = dict(reasons)
    return v


def feed(
    bootstrap: str,
    topic: str,
    total: int,
    rate: float,
    bad_every: int = 997,
    sources: int = 11,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Publish ``total`` beats at ``rate``/s, every ``bad_every``-th one malformed; return how many."""
    beats, _ = load_test_split()
    # Buffers and waits sized so a broker outage of minutes stalls the feed instead of failing it.
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        batch_size=256 * 1024,
        max_block_ms=600_000,
        delivery_timeout_ms=600_000,
    )
    headers = m.beat_headers()
    start = time.monotonic()
    sent = 0
    for i in range(total):
        if stop():
            break
        source = f"source-{i % sources}"
        value = (
            b"not json"
            if bad_every and i % bad_every == 0
            else m.encode_beat_json(source, beats[i % len(beats)], beat_id=f"b{i}")
        )
        producer.send(topic, key=source.encode(), value=value, headers=headers)
        sent += 1
        if i % 50 == 49:
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    producer.flush(600)
    producer.close()
    return sent


def committed_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Per partition, end offset minus the group's committed offset (read without joining the group)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        return {tp.partition: ends[tp] - (consumer.committed(tp, timeout_ms=5000) or 0) for tp in partitions}
    finally:
        consumer.close(autocommit=False, timeout_ms=2000)


def group_done(bootstrap: str, group: str, topic: str, total: int) -> Callable[[], bool]:
    """A condition: ``total`` inputs were written and the group committed every one of them."""

    def done() -> bool:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            written = sum(consumer.end_offsets(partitions).values())
        finally:
            consumer.close(autocommit=False, timeout_ms=2000)
        return written >= total and not any(committed_lag(bootstrap, group, topic).values())

    return done


class LagWatch:
    """Samples the group's committed offsets; records the longest time a partition with lag did not move."""

    def __init__(self, bootstrap: str, group: str, topic: str, period: float = 5.0) -> None:
        self.bootstrap, self.group, self.topic, self.period = bootstrap, group, topic, period
        self.longest_stall = 0.0
        self.stalled_partition: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        since: dict[int, tuple[int, float]] = {}  # partition → (committed offset, first seen at)
        while not self._stop.wait(self.period):
            try:
                committed, ends = committed_offsets(self.bootstrap, self.group, self.topic)
            except Exception:  # the broker may be unreachable in some scenarios: try again later
                continue
            now = time.monotonic()
            for p, offset in committed.items():
                if offset >= ends[p] or since.get(p, (None,))[0] != offset:
                    since[p] = (offset, now)
                    continue
                stalled = now - since[p][1]
                if stalled > self.longest_stall:
                    self.longest_stall, self.stalled_partition = stalled, p


def committed_offsets(bootstrap: str, group: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """(committed offset, end offset) per partition, read without joining the group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        committed = {tp.partition: consumer.committed(tp, timeout_ms=5000) or 0 for tp in partitions}
        return committed, {tp.partition: ends[tp] for tp in partitions}
    finally:
        consumer.close(autocommit=False, timeout_ms=2000)
