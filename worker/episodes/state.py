"""One source's episode state, and its encoding as a changelog value.

A source has state only while it matters: from its first anomalous beat until its window holds no
anomalous beat and no episode is open. Closed, it keeps the anomalous beats still inside its
window (at most ``k - 1``: the k-th opens an episode); open, a fixed set of numbers. So memory per
source is bounded by the rule, not by how long a source sends.

``through`` is the input offset of the last record reflected in the state (see
:mod:`ecg_anomaly.worker.episodes.store` for why it is stored). A state that became empty is written
once as an *empty* value that keeps ``through`` before its key is deleted
(:mod:`ecg_anomaly.worker.episodes.changelog`).

Values are JSON (orjson): readable with any console consumer, and a few microseconds each. A
closed source's pending beats are a flat list of numbers there (seq, beat time, score, ratio,
offset for each).
"""

from __future__ import annotations

from array import array
from operator import attrgetter
from typing import Any

import orjson

VERSION = 1
CLOCK_KEY = b"\xffclock"  # the partition's beat-time clock; never a source id (not UTF-8)


PENDING_FIELDS = 5  # a pending beat in a closed source's window: seq, beat time, score, ratio, offset
SEQ, MS, SCORE, RATIO, OFFSET = range(PENDING_FIELDS)


class Episode:
    """An open episode: from its first anomalous beat to its last one so far."""

    __slots__ = (
        "anomalous",
        "first_ms",
        "last_ms",
        "news",
        "normal_run",
        "opened_ms",
        "opened_offset",
        "peak_ms",
        "peak_offset",
        "peak_ratio",
        "peak_score",
        "records",
        "reported_ms",
        "total",
    )

    def __init__(self, pending: array, opened_offset: int, opened_ms: int, seq: int) -> None:
        """Opened by the beat ``seq`` (the source's count), the last of the ``pending`` ones."""
        self.opened_offset, self.opened_ms = opened_offset, opened_ms
        self.first_ms = int(pending[MS])
        self.last_ms = opened_ms  # the last anomalous beat
        self.anomalous = len(pending) // PENDING_FIELDS
        self.total = seq - int(pending[SEQ]) + 1  # beats from the first anomalous one to the last
        self.normal_run = 0  # normal beats since the last anomalous one (not counted in total yet)
        scores = pending[SCORE::PENDING_FIELDS]
        peak = scores.index(max(scores)) * PENDING_FIELDS  # the first of equal peaks
        self.peak_score, self.peak_ratio = pending[peak + SCORE], pending[peak + RATIO]
        self.peak_offset, self.peak_ms = int(pending[peak + OFFSET]), int(pending[peak + MS])
        self.records = 0  # alert records written for it: the next one's sequence number
        self.reported_ms = opened_ms  # beat time of its last record
        self.news = False  # changed since its last record


# An episode in a changelog value: its fields as one list, in this order (the stored format).
STORED_FIELDS = (
    "opened_offset",
    "opened_ms",
    "first_ms",
    "last_ms",
    "anomalous",
    "total",
    "normal_run",
    "peak_score",
    "peak_ratio",
    "peak_offset",
    "peak_ms",
    "records",
    "reported_ms",
    "news",
)
assert sorted(STORED_FIELDS) == sorted(Episode.__slots__)
_stored = attrgetter(*STORED_FIELDS)  # the fields as a tuple, in one C call


class SourceState:
    __slots__ = ("deadline", "episode", "pending", "seen_ms", "seq", "size", "through")

    def __init__(self, through: int, seq: int, seen_ms: int) -> None:
        self.through = through
        self.seq = seq  # beats of this source since its state began
        self.seen_ms = seen_ms  # its latest beat time
        self.deadline = 0  # of its one entry in its partition's heap of deadlines (others are stale)
        # closed: the anomalous beats inside its window, PENDING_FIELDS numbers each, or None. Doubles
        # in one array (exact for offsets and beat times): as tuples of Python numbers they were most
        # of a source's memory (944 -> 592 bytes a source with k - 1 of them, measured)
        self.pending: array | None = None
        self.episode: Episode | None = None
        self.size = 0  # bytes of its last changelog value (the state-size metric)

    @property
    def empty(self) -> bool:
        return self.episode is None and not self.pending


def encode(state: SourceState) -> bytes:
    doc: dict[str, Any] = {
        "v": VERSION,
        "through": state.through,
        "seq": state.seq,
        "seen": state.seen_ms,
        "pending": state.pending.tolist() if state.pending else [],
    }
    e = state.episode
    if e is not None:
        doc["episode"] = _stored(e)
    return orjson.dumps(doc)


def encode_empty(through: int) -> bytes:
    return b'{"v":%d,"through":%d}' % (VERSION, through)


def encode_clock(through: int, clock_ms: int) -> bytes:
    return b'{"v":%d,"through":%d,"clock":%d}' % (VERSION, through, clock_ms)


def decode(value: bytes) -> SourceState:
    """A changelog value back to a state (an empty one has neither pending beats nor an episode)."""
    doc = orjson.loads(value)
    if doc.get("v") != VERSION:
        raise ValueError(f"episode state version {doc.get('v')!r}, this worker reads {VERSION}")
    state = SourceState(doc["through"], doc.get("seq", -1), doc.get("seen", 0))
    pending = doc.get("pending")
    if pending:
        state.pending = array("d", pending)
    state.size = len(value)
    fields = doc.get("episode")
    if fields is not None:
        e = Episode.__new__(Episode)
        for name, value in zip(STORED_FIELDS, fields, strict=True):
            setattr(e, name, value)
        state.episode = e
    return state


def decode_clock(value: bytes) -> tuple[int, int]:
    """(through, clock_ms) of a partition's clock record."""
    doc = orjson.loads(value)
    return doc["through"], doc["clock"]
