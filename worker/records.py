"""One poll's records, read from confluent-kafka's messages once, a column per field.

Each field of a message is a method call that copies its bytes; reading them field by field over
the whole poll (``map`` over the method, in C) costs a fraction of building an object per record,
and the decoder and the outputs want columns anyway: every value to check, every key of the binary
beats, the coordinates of the flagged ones. A single :class:`Record` is built only where one record
is handled alone (a dead letter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, NamedTuple

from confluent_kafka import Message

Headers = list[tuple[str, bytes]] | None


class Record(NamedTuple):
    """One consumed record (what a dead letter copies)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # epoch ms
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True, slots=True)
class Records:
    """The records of one poll, in the order consumed; ``record(i)`` is the i-th as a :class:`Record`."""

    topic: Sequence[str]
    partition: Sequence[int]
    offset: Sequence[int]
    timestamp: Sequence[int]
    key: Sequence[bytes | None]
    value: Sequence[bytes | None]
    headers: Sequence[Headers]

    def __len__(self) -> int:
        return len(self.offset)

    def record(self, i: int) -> Record:
        return Record(
            self.topic[i],
            self.partition[i],
            self.offset[i],
            self.timestamp[i],
            self.key[i],
            self.value[i],
            self.headers[i],
        )

    @classmethod
    def of(cls, records: Sequence[Record]) -> Records:
        """From records built one by one (tests, tools)."""
        columns: list[Any] = [list(c) for c in zip(*records, strict=True)] if records else [[]] * 7
        return cls(*columns)

    def offsets(self) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """Per (topic, partition): the first offset, and the one after the last.

        A poll holds each partition's records in runs (a fetch at a time): ``groupby`` finds the runs
        in C and only their ends are looked at here, not every record.
        """
        first: dict[tuple[str, int], int] = {}
        after: dict[tuple[str, int], int] = {}
        offsets, end = self.offset, 0
        for tp, run in groupby(zip(self.topic, self.partition, strict=True)):
            start, end = end, end + len(list(run))
            first.setdefault(tp, offsets[start])
            after[tp] = offsets[end - 1] + 1
        return first, after


def take(messages: list[Message]) -> tuple[Records, list[Message]]:
    """The records of the messages without an error, and the messages with one (in order)."""
    failed = [m for m in messages if m.error() is not None]
    good = [m for m in messages if m.error() is None] if failed else messages
    return (
        Records(
            list(map(Message.topic, good)),
            list(map(Message.partition, good)),
            list(map(Message.offset, good)),
            [stamp for _, stamp in map(Message.timestamp, good)],
            list(map(Message.key, good)),
            list(map(Message.value, good)),
            list(map(Message.headers, good)),
        ),
        failed,
    )
