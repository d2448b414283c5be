"""Alert records: one per episode transition, following ``alert.schema.json``, keyed by source.

Every field comes from the input (beat times, offsets, scores) and the model, never from the clock
of the worker: a beat processed twice (at-least-once after a crash) gives the same bytes, so a
duplicate is an identical copy, and ``(episode_id, sequence)`` names each record.
"""

from __future__ import annotations

import orjson

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker.episodes.state import Episode
from ecg_anomaly.worker.events import OutRecord

HEADERS = m.beat_headers(m.ALERT_CONTENT_TYPE)


def alert(
    topic: str,
    kind: str,
    source: str,
    input_topic: str,
    partition: int,
    episode: Episode,
    version: str,
    reason: str | None = None,
) -> OutRecord:
    """The record of ``episode``'s transition ``kind`` (its sequence number is taken here)."""
    sequence = episode.records
    episode.records += 1
    doc = {
        "episode_id": m.episode_id(input_topic, partition, episode.opened_offset),
        "source_id": source,
        "kind": kind,
        "sequence": sequence,
        "first_beat_time": m.iso_time(episode.first_ms),
        "last_beat_time": m.iso_time(episode.last_ms),
        "anomalous_beats": episode.anomalous,
        "total_beats": episode.total,
        "peak_score": episode.peak_score,
        "peak_severity": m.ratio_severity(episode.peak_ratio),
        "model_version": version,
        "opened_by": _where(input_topic, partition, episode.opened_offset, episode.opened_ms),
        "peak": _where(input_topic, partition, episode.peak_offset, episode.peak_ms),
    }
    if reason is not None:
        doc["closed_reason"] = reason
    return OutRecord(topic, source.encode(), orjson.dumps(doc), HEADERS)


def _where(topic: str, partition: int, offset: int, ms: int) -> dict[str, object]:
    return {"topic": topic, "partition": partition, "offset": offset, "beat_time": m.iso_time(ms)}
