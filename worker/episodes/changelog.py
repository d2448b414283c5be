"""The episode changelog: a compacted topic keyed by source, one partition per input partition.

A checkpoint (exactly-once: every transaction; at-least-once: every commit, after the outputs of the
batches it covers were acknowledged) writes, per partition and in this order: the changed sources'
values, the partition's clock, then deletions (tombstones). One producer writes a partition's
records in order, so what a crash leaves of a checkpoint is a prefix of that list:

* a source's value without the clock: the value carries its own ``through``; the restored state is
  ahead of the clock for that source and skips the records it reflects;
* a deleted source must not lose its ``through`` that way: an emptied source is first written as an
  *empty* value (which keeps ``through``), and its tombstone only in a later checkpoint, after one in
  which its empty value was acknowledged. A tombstone then never comes before the clock that already
  covers it.

Records go to the partition of the input they came from (not by key hash), so a restore reads
exactly the partitions a worker was assigned, whatever partitioner produced the input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.worker.episodes.state import CLOCK_KEY
from ecg_anomaly.worker.episodes.store import Changes
from ecg_anomaly.worker.events import OutRecord

log = logging.getLogger(__name__)

COMPACT = "compact"


@dataclass
class Written:
    """What a checkpoint wrote that matters once it is acknowledged."""

    empties: dict[int, set[bytes]] = field(default_factory=dict)
    tombstones: dict[int, set[bytes]] = field(default_factory=dict)


class ChangelogWriter:
    """The records of each checkpoint, ordered as above; remembers which empties may now be deleted."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._deletable: dict[int, set[bytes]] = {}  # keys whose empty value was acknowledged

    def records(self, changes: Changes) -> tuple[list[OutRecord], Written]:
        out: list[OutRecord] = []
        written = Written()
        topic = self.topic
        for p, keyed in changes.items():
            deletable = self._deletable.setdefault(p, set())
            empties = written.empties.setdefault(p, set())
            clock = None
            for key, (value, empty) in keyed.items():
                if key == CLOCK_KEY:
                    clock = value
                    continue
                out.append(OutRecord(topic, key, value, [], 0, p))
                deletable.discard(key)  # superseded; an empty again becomes deletable once acknowledged
                if empty:
                    empties.add(key)
            if clock is not None:
                out.append(OutRecord(topic, CLOCK_KEY, clock, [], 0, p))
            if deletable:
                gone = written.tombstones[p] = set(deletable)
                out.extend(OutRecord(topic, key, None, [], 0, p) for key in sorted(gone))
        return out, written

    def acknowledged(self, written: Written) -> None:
        for p, keys in written.tombstones.items():
            self._deletable.get(p, set()).difference_update(keys)
        for p, keys in written.empties.items():
            self._deletable.setdefault(p, set()).update(keys)

    def reset(self, partition: int, deletable: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
        """The partition was (re)assigned or restored: these durable empties may be deleted."""
        self._deletable[partition] = set(deletable)

    def forget(self, partitions: list[int]) -> None:
        for p in partitions:
            self._deletable.pop(p, None)


def check_topic(admin: Any, input_topic: str, topic: str, create: bool, timeout: float) -> tuple[int, bool]:
    """The changelog's partition count, once it matches the input's; creates it if missing and asked.

    ``admin`` is a confluent-kafka ``AdminClient``. Returns (partitions, created). Raises
    :class:`EcgAnomalyError` with what to fix when it cannot be used.
    """
    from confluent_kafka.admin import ConfigResource, NewTopic

    metadata = admin.list_topics(timeout=timeout)
    source = metadata.topics.get(input_topic)
    if source is None or source.error is not None or not source.partitions:
        raise EcgAnomalyError(
            f"episodes: the input topic {input_topic} must exist first (the changelog {topic} gets "
            "as many partitions)"
        )
    partitions = len(source.partitions)
    existing = metadata.topics.get(topic)
    if existing is None or existing.error is not None or not existing.partitions:
        if not create:
            raise EcgAnomalyError(f"episodes: the changelog topic {topic} does not exist")
        replicas = len(next(iter(source.partitions.values())).replicas)
        new = NewTopic(topic, partitions, replicas, config={"cleanup.policy": COMPACT})
        future = admin.create_topics([new], request_timeout=timeout)[topic]
        try:
            future.result(timeout + 1)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise EcgAnomalyError(f"episodes: cannot create the changelog topic {topic}: {exc}") from exc
            return check_topic(admin, input_topic, topic, False, timeout)  # another replica's: check it
        log.info("episode changelog topic created", extra={"topic": topic, "partitions": partitions})
        return partitions, True
    if len(existing.partitions) != partitions:
        raise EcgAnomalyError(
            f"episodes: the changelog topic {topic} has {len(existing.partitions)} partitions and the "
            f"input topic {input_topic} {partitions}: they must match (a new changelog topic, or "
            "--episode-changelog-topic)"
        )
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = next(iter(admin.describe_configs([resource], request_timeout=timeout).values())).result(
        timeout + 1
    )
    policy = entries["cleanup.policy"].value if "cleanup.policy" in entries else "delete"
    if COMPACT not in policy.split(","):
        raise EcgAnomalyError(
            f"episodes: the changelog topic {topic} has cleanup.policy={policy}: it must be compact "
            "(deleting old segments would lose the state of quiet sources)"
        )
    return partitions, False
