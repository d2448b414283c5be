"""Every source's episode state on this worker's partitions, stepped with each scored batch.

:meth:`EpisodeStore.step` takes a batch's scored beats in input order and gives the batch's alert
records and what it changed (the changelog values of the changed sources and of each partition's
clock). A source's beats are applied in their partition's order, so the result is the same however
the records were cut into batches, and the same again when they are processed a second time.

**Beat time, per partition.** Silence is judged on the partition's clock: the latest beat time seen
on it. When the clock passes a source's last beat by ``--episode-silence``, its episode closes
(``silent``) at that record, before that record's own beat is applied. A heap of deadlines finds
those sources without looking at the others: each beat costs a comparison.

**``through``.** Each state, and each partition's clock, records the input offset of the last record
it reflects, and a record at or before it is not applied again. That makes a restored state exact
whatever was lost: a changelog written by an at-least-once checkpoint may be ahead of the committed
offsets (written, then the worker died before the commit) or, for some keys, written and for others
not (:mod:`ecg_anomaly.worker.episodes.changelog` orders a checkpoint's records so that this is
safe). Re-processed records then only repeat outputs that were already acknowledged (the changelog
is written only after a batch's outputs were), and never apply a beat twice.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ecg_anomaly.schemas.messages import ALERT_KINDS, CLOSE_REASONS
from ecg_anomaly.worker.columns import VECTOR_FROM
from ecg_anomaly.worker.decode import DecodedBatch
from ecg_anomaly.worker.episodes.alerts import alert
from ecg_anomaly.worker.episodes.rules import EpisodeRules
from ecg_anomaly.worker.episodes.state import (
    CLOCK_KEY,
    PENDING_FIELDS,
    Episode,
    SourceState,
    decode,
    decode_clock,
    encode,
    encode_clock,
    encode_empty,
)
from ecg_anomaly.worker.events import OutRecord
from ecg_anomaly.worker.inflight import Offsets

OPENED, UPDATED, CLOSED = ALERT_KINDS
RECOVERED, SILENT = CLOSE_REASONS  # why an episode closed
_NEVER = float("inf")

Change = tuple[bytes, bool]  # a changelog value, and whether it is an empty state's
Changes = dict[int, dict[bytes, Change]]  # partition → key → change (the clock's under CLOCK_KEY)


@dataclass(slots=True)
class EpisodeStep:
    """What one batch did to the episodes."""

    alerts: list[OutRecord] = field(default_factory=list)
    changes: Changes = field(default_factory=dict)
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((OPENED, UPDATED, *CLOSE_REASONS), 0)
    )


class _Partition:
    __slots__ = ("clock_ms", "deadlines", "sources", "through")

    def __init__(self) -> None:
        self.sources: dict[str, SourceState] = {}
        self.clock_ms = 0  # the latest beat time of the partition
        self.through = -1  # the offset of the last record reflected
        # (a beat time + silence, source), a heap: an entry is a state's own while its ``deadline``
        # says so; one left by a state that was forgotten (and perhaps made again) is stale
        self.deadlines: list[tuple[int, str]] = []


class EpisodeStore:
    def __init__(self, rules: EpisodeRules, alerts_topic: str) -> None:
        self.rules = rules
        self.alerts_topic = alerts_topic
        self._parts: dict[int, _Partition] = {}
        self.sources = 0  # with state
        self.open = 0  # open episodes
        self.state_bytes = 0  # of their changelog values

    @property
    def partitions(self) -> list[int]:
        return sorted(self._parts)

    def through(self, partition: int) -> int:
        """The offset of the last record the partition's state reflects (-1: none)."""
        part = self._parts.get(partition)
        return -1 if part is None else part.through

    # --- a scored batch ------------------------------------------------------------------------------

    def step(
        self,
        batch: DecodedBatch,
        anomaly: np.ndarray,
        score: np.ndarray | None,
        threshold: float,
        after: Offsets,
        version: str,
    ) -> EpisodeStep:
        """Apply the batch's scored beats (``after``: per partition, the offset after the batch)."""
        out = EpisodeStep()
        by_partition: dict[int, list[int]] = {}
        topic = ""
        beats: tuple[Sequence, ...] = ()
        if len(batch) and score is not None:
            records, rows = batch.records, batch.rows
            every_record = len(rows) == len(records)  # rows are ascending: then they are all of them
            offsets = records.offset if every_record else [records.offset[r] for r in rows]
            by_partition = _by_partition(
                records.partition if every_record else [records.partition[r] for r in rows]
            )
            topic = records.topic[rows[0]]
            scores = score.astype(np.float64)
            beats = (
                offsets,
                batch.beat_times,
                batch.source_ids,
                anomaly.tolist(),
                scores.tolist(),
                (scores / threshold).tolist(),
            )
        for (_topic, p), end in after.items():
            part = self._parts.get(p)
            if part is None:
                part = self._parts[p] = _Partition()
            changed: dict[str, SourceState] = {}
            indices = by_partition.get(p)
            if indices:
                self._beats(part, p, topic, indices, beats, version, changed, out)
            part.through = max(part.through, end - 1)
            out.changes[p] = self._encode(part, changed)
        return out

    def _beats(
        self,
        part: _Partition,
        p: int,
        topic: str,
        indices: Sequence[int],
        beats: tuple[Sequence, ...],
        version: str,
        changed: dict[str, SourceState],
        out: EpisodeStep,
    ) -> None:
        """One partition's beats, in order; the hot loop (locals only, one dict lookup per beat)."""
        rules = self.rules
        k, n, m, silence, every = (
            rules.open_anomalies,
            rules.window,
            rules.close_normal,
            rules.silence_ms,
            rules.update_ms,
        )
        offsets, times, sources, flags, scores, ratios = beats
        states, heap = part.sources, part.deadlines
        through, clock = part.through, part.clock_ms
        next_deadline = heap[0][0] if heap else _NEVER
        alerts, counts, atopic = out.alerts, out.counts, self.alerts_topic
        for i in indices:
            off = offsets[i]
            if off <= through:  # reflected already (a restored partition re-reads from its commit)
                continue
            t = times[i]
            if t > clock:
                clock = t
                if clock > next_deadline:
                    next_deadline = self._sweep(part, p, topic, clock, off, version, changed, out)
            src = sources[i]
            st = states.get(src)
            flag = flags[i]
            if st is None:
                if not flag:
                    continue
                st = states[src] = SourceState(off, -1, t)
                self.sources += 1
                st.deadline = t + silence
                heapq.heappush(heap, (st.deadline, src))
                next_deadline = min(next_deadline, st.deadline)
            elif off <= st.through:
                continue
            st.through = off
            if t > st.seen_ms:
                st.seen_ms = t
            changed[src] = st
            ep = st.episode
            if ep is None:
                q = st.seq = st.seq + 1
                pending = st.pending
                while pending and q - pending[0] >= n:  # its oldest beat left the window
                    del pending[:PENDING_FIELDS]
                if flag:
                    if pending is None:
                        pending = st.pending = array("d")
                    pending.extend((q, t, scores[i], ratios[i], off))
                    if len(pending) >= k * PENDING_FIELDS:
                        ep = st.episode = Episode(pending, off, t, q)
                        st.pending = None
                        self.open += 1
                        counts[OPENED] += 1
                        alerts.append(alert(atopic, OPENED, src, topic, p, ep, version))
                elif not pending:
                    self._forget(states, src)
            elif flag:
                ep.anomalous += 1
                ep.total += ep.normal_run + 1
                ep.normal_run = 0
                ep.last_ms = t
                ep.news = True
                s = scores[i]
                if s > ep.peak_score:
                    ep.peak_score, ep.peak_ratio, ep.peak_offset, ep.peak_ms = s, ratios[i], off, t
                if every and t - ep.reported_ms >= every:
                    self._update(atopic, src, topic, p, ep, version, t, out)
            else:
                ep.normal_run += 1
                if ep.normal_run >= m:
                    self._close(atopic, src, topic, p, st, version, RECOVERED, out)
                    self._forget(states, src)
                elif every and ep.news and t - ep.reported_ms >= every:
                    self._update(atopic, src, topic, p, ep, version, t, out)
        part.clock_ms = clock

    def _sweep(
        self,
        part: _Partition,
        p: int,
        topic: str,
        clock: int,
        off: int,
        version: str,
        changed: dict[str, SourceState],
        out: EpisodeStep,
    ) -> float:
        """Close and forget the sources silent for longer than the rule allows; the next deadline."""
        heap, states, silence = part.deadlines, part.sources, self.rules.silence_ms
        later: list[tuple[int, str]] = []
        while heap and heap[0][0] < clock:
            entry = heapq.heappop(heap)
            src = entry[1]
            st = states.get(src)
            if st is None or st.deadline != entry[0]:  # stale
                continue
            deadline = st.seen_ms + silence
            if deadline >= clock:  # heard from since the entry was made
                st.deadline = deadline
                heapq.heappush(heap, (deadline, src))
            elif st.through >= off:  # restored ahead of this record: the original run did this later
                later.append(entry)
            else:
                st.through = off - 1  # the records before this one are what it reflects
                changed[src] = st
                if st.episode is not None:
                    self._close(self.alerts_topic, src, topic, p, st, version, SILENT, out)
                self._forget(states, src)
        for entry in later:
            heapq.heappush(heap, entry)
        return heap[0][0] if heap else _NEVER

    def _update(
        self, atopic: str, src: str, topic: str, p: int, ep: Episode, version: str, t: int, out: EpisodeStep
    ) -> None:
        ep.reported_ms, ep.news = t, False
        out.counts[UPDATED] += 1
        out.alerts.append(alert(atopic, UPDATED, src, topic, p, ep, version))

    def _close(
        self,
        atopic: str,
        src: str,
        topic: str,
        p: int,
        st: SourceState,
        version: str,
        reason: str,
        out: EpisodeStep,
    ) -> None:
        ep = st.episode
        assert ep is not None
        st.episode = None
        self.open -= 1
        out.counts[reason] += 1
        out.alerts.append(alert(atopic, CLOSED, src, topic, p, ep, version, reason))

    def _forget(self, states: dict[str, SourceState], src: str) -> None:
        """An empty state leaves memory; its changelog value is written once as empty (then deleted)."""
        st = states.pop(src)
        self.sources -= 1
        self.state_bytes -= st.size
        st.size = 0

    def _encode(self, part: _Partition, changed: dict[str, SourceState]) -> dict[bytes, Change]:
        changes: dict[bytes, Change] = {}
        states = part.sources
        for src, st in changed.items():
            if states.get(src) is st:
                value = encode(st)
                self.state_bytes += len(value) - st.size
                st.size = len(value)
                changes[src.encode()] = (value, False)
            else:
                changes[src.encode()] = (encode_empty(st.through), True)
        changes[CLOCK_KEY] = (encode_clock(part.through, part.clock_ms), False)
        return changes

    # --- restore and revoke --------------------------------------------------------------------------

    def begin(self, partition: int) -> None:
        """Start restoring ``partition`` from nothing (what memory held of it is dropped)."""
        self.drop([partition])
        self._parts[partition] = _Partition()

    def load(self, partition: int, key: bytes, value: bytes | None) -> None:
        """One changelog record, in log order (a later value of a key replaces an earlier one)."""
        part = self._parts[partition]
        if key == CLOCK_KEY:
            if value is not None:
                part.through, part.clock_ms = decode_clock(value)
        elif value is None:
            part.sources.pop(key.decode(), None)
        else:
            part.sources[key.decode()] = decode(value)

    def finish(self, partition: int) -> set[bytes]:
        """The partition is read: rebuild its deadlines, recount; returns the keys of the empties it
        held that its clock covers (dropped here: their tombstones may be written now)."""
        part = self._parts[partition]
        states = part.sources
        covered = [s for s, st in states.items() if st.empty and st.through <= part.through]
        for src in covered:
            del states[src]
        silence = self.rules.silence_ms
        for st in states.values():
            st.deadline = st.seen_ms + silence
        part.deadlines = [(st.deadline, src) for src, st in states.items()]
        heapq.heapify(part.deadlines)
        self._recount()
        return {src.encode() for src in covered}

    def drop(self, partitions: list[int]) -> None:
        for p in partitions:
            self._parts.pop(p, None)
        self._recount()

    def _recount(self) -> None:
        states = [st for part in self._parts.values() for st in part.sources.values()]
        self.sources = len(states)
        self.open = sum(1 for st in states if st.episode is not None)
        self.state_bytes = sum(st.size for st in states)


def _by_partition(partitions: Sequence[int]) -> dict[int, list[int]]:
    """The beats' indices per partition, each in input order: one stable sort in numpy for a large
    batch, a loop for a live feed's few beats (numpy's fixed cost was most of a 3-beat batch's step)."""
    if len(partitions) < VECTOR_FROM:
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(partitions):
            groups.setdefault(p, []).append(i)
        return groups
    column = np.asarray(partitions)
    if column[0] == column[-1] and (column == column[0]).all():
        return {int(column[0]): list(range(len(column)))}
    order = np.argsort(column, kind="stable")
    cuts = np.flatnonzero(np.diff(column[order])) + 1
    return {int(column[chunk[0]]): chunk.tolist() for chunk in np.split(order, cuts)}
