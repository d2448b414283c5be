"""Episodes in the running worker: throughput on vs off, the ECG5000 replay, state memory, restore time.

* :func:`throughput` drains a feed with ``--episodes`` (defaults) or without, as
  :func:`tests.bench.worker_throughput.throughput` does for the rest of the bench.
* :func:`replay` sends the ECG5000 test split as ``ecg-anomaly replay --sources 16 --loop`` would
  (beat n to source n mod 16) with beat times 0.833 s apart per source (72 a minute), an hour of
  beat time as fast as the worker takes it, and counts anomaly events and alert records per hour.
* :func:`memory` measures the store's memory per 1,000 sources in-process (tracemalloc), for sources
  with an open episode, with the most pending beats a closed source can hold, and as the replay
  leaves them.
* :func:`restore` writes the changelog of ``sources`` sources (half with an open episode, half with
  the most pending beats) and times a worker's restore of it on assignment
  (``ecg_episode_restore_seconds``), with its resident memory.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Producer
from kafka.admin import KafkaAdminClient, NewTopic

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker.episodes.changelog import COMPACT, ChangelogWriter
from ecg_anomaly.worker.episodes.rules import EpisodeRules
from ecg_anomaly.worker.episodes.state import CLOCK_KEY, encode, encode_clock
from ecg_anomaly.worker.episodes.store import EpisodeStore
from ecg_anomaly.worker.model import load_model
from ecg_anomaly.worker.settings import configure, load_settings
from tests.bench import worker_throughput as wt
from tests.bench.common import PARTITIONS, Feed, create_topics, rss_mb, unique, worker
from tests.support.artifact import load_test_split
from tests.support.episodes import THRESHOLD, Beat, batch
from tests.support.worker import wait_for

SOURCES = 16
BEAT_MS = 833
HOUR_BEATS = 3_600_000 // BEAT_MS * SOURCES
T0 = 1_750_000_000_000
REPLAYED_SOURCES = 10_000  # the replay's mix per source needs no more (40 beats each, under tracemalloc)


def default_rules() -> EpisodeRules:
    """The worker's defaults (the option table), as a worker started without episode flags has them."""
    parser = argparse.ArgumentParser()
    configure(parser)
    return load_settings(parser.parse_args(["--model", "m.onnx"]), {}).episode_rules


def throughput(
    bootstrap: str, model: Path, admin: KafkaAdminClient, feed: Feed, logs: Path, episodes: bool
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if episodes:
        alerts = unique("bench-alerts")
        create_topics(admin, alerts)
        options = {"episodes": True, "alerts_topic": alerts}
    result = wt.throughput(bootstrap, model, admin, feed, logs, **options)
    return {**result, "episodes": episodes}


def replay(
    bootstrap: str, model: Path, admin: KafkaAdminClient, logs: Path, hours: float = 1.0
) -> dict[str, Any]:
    """The test split, looped, as 16 sources at 72 beats a minute each: ``hours`` of beat time."""
    values, _ = load_test_split()
    total = int(hours * HOUR_BEATS)
    topic, anomalies, dlq, alerts = (unique(f"bench-replay-{x}") for x in ("in", "anom", "dlq", "alerts"))
    create_topics(admin, topic, anomalies, dlq, alerts)
    keys = [f"patient-{s:03d}" for s in range(SOURCES)]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    headers = m.beat_headers()
    for i in range(total):
        source = keys[i % SOURCES]
        value = m.encode_beat_json(source, values[i % len(values)], beat_time=T0 + (i // SOURCES) * BEAT_MS)
        while True:
            try:
                producer.produce(topic, value, source.encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("the replay feed could not deliver every beat")
    w = worker(
        bootstrap,
        model,
        topic,
        logs,
        anomaly_topic=anomalies,
        dlq_topic=dlq,
        alerts_topic=alerts,
        episodes=True,
    )
    w.start()
    try:
        w.wait_ready()
        wait_for(lambda: w.metrics()["ecg_beats_consumed_total"] >= total, 600, "the replay drained")
        time.sleep(1)  # the last batch's counts land once it is acknowledged
        metrics = w.metrics()
    finally:
        w.stop()
    rules = default_rules()
    kinds = {k: metrics[f'ecg_episode_transitions_total{{kind="{k}"}}'] for k in m.ALERT_KINDS}
    events = metrics['ecg_beats_scored_total{outcome="anomaly"}']
    per_hour = 1 / hours
    return {
        "rule": f"{rules.open_anomalies} of {rules.window}, {rules.close_normal} normal, "
        f"silence {rules.silence_ms / 1000:g} s, updates every {rules.update_ms / 1000:g} s",
        "sources": SOURCES,
        "beat_hours": hours,
        "beats": total,
        "anomaly_events_per_hour": round(events * per_hour),
        "episodes_opened_per_hour": round(kinds["opened"] * per_hour),
        "alert_records_per_hour": round(sum(kinds.values()) * per_hour),
        "alert_records_by_kind": kinds,
        "open_at_end": metrics["ecg_episodes_open"],
        "reduction_opened": round(events / max(kinds["opened"], 1), 1),
        "reduction_records": round(events / max(sum(kinds.values()), 1), 1),
    }


def _replayed_store(model: Path, sources: int, rules: EpisodeRules, partitions: int = 1) -> EpisodeStore:
    """A store holding ``sources`` sources as the replayed ECG5000 stream leaves them (scores the
    worker's model gives): each source gets a few dozen beats of the looped test split."""
    values, _ = load_test_split()
    loaded = load_model(model)
    ratios = loaded.score(values.astype(np.float32)).score.astype(np.float64) / loaded.threshold
    store = EpisodeStore(rules, "alerts")
    per_source = 40
    offsets = [0] * partitions
    beats = []
    for i in range(sources * per_source):
        source = i % sources
        p = source % partitions
        beats.append(
            Beat(
                p,
                offsets[p],
                f"patient-{source:06d}",
                T0 + (i // sources) * BEAT_MS,
                ratios[i % len(ratios)] * THRESHOLD,
            )
        )
        offsets[p] += 1
    for lo in range(0, len(beats), 4096):
        decoded, flags, score, after = batch(beats[lo : lo + 4096])
        store.step(decoded, flags, score, THRESHOLD, after, "bench")
    return store


def _states(sources: int, rules: EpisodeRules, open_share: float, partitions: int = 1) -> list[list[Beat]]:
    """Batches that leave ``sources`` sources with state: ``open_share`` of them with an open episode
    (``n`` anomalous beats), the rest with the most pending beats a closed source holds (``k - 1``)."""
    opened, pending = open_share * sources, rules.open_anomalies - 1
    beats = [
        Beat(
            s % partitions,
            i * sources + s,
            f"patient-{s:06d}",
            T0 + i * BEAT_MS,
            2.0 if s < opened or i < pending else 0.5,
        )
        for i in range(rules.window)
        for s in range(sources)
    ]
    return [beats[lo : lo + 4096] for lo in range(0, len(beats), 4096)]


def _fill(store: EpisodeStore, batches: list[list[Beat]]) -> None:
    for beats in batches:
        decoded, flags, score, after = batch(beats)
        store.step(decoded, flags, score, THRESHOLD, after, "bench")


def memory(model: Path, sources: int = 100_000) -> dict[str, Any]:
    """Bytes per 1,000 sources held in the store (tracemalloc: Python objects, dict entries included)."""
    rules = default_rules()
    out: dict[str, Any] = {"sources": sources}
    for name, share in (("open", 1.0), ("pending", 0.0)):
        batches = _states(sources, rules, share)
        store = EpisodeStore(rules, "alerts")
        tracemalloc.start()
        _fill(store, batches)
        used = tracemalloc.get_traced_memory()[0]  # what the store keeps (the batches were made before)
        tracemalloc.stop()
        assert store.sources == sources and store.open == share * sources
        out[f"{name}_bytes_per_1000_sources"] = round(used / sources * 1000)
        out[f"{name}_changelog_bytes_per_1000_sources"] = round(store.state_bytes / sources * 1000)
        del batches, store
    tracemalloc.start()
    store = _replayed_store(model, min(sources, REPLAYED_SOURCES), rules)
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    out["replayed_sources_with_state"] = store.sources
    out["replayed_open"] = store.open
    out["replayed_bytes_per_1000_sources_with_state"] = round(used / max(store.sources, 1) * 1000)
    return out


def restore(
    bootstrap: str, model: Path, admin: KafkaAdminClient, logs: Path, sources: int = 100_000
) -> dict[str, Any]:
    """A worker assigned partitions whose changelog holds ``sources`` sources: its restore time."""
    rules = default_rules()
    store = EpisodeStore(rules, "alerts")
    _fill(store, _states(sources, rules, 0.5, PARTITIONS))  # half open, half with the most pending beats
    changes: dict[int, dict[bytes, tuple[bytes, bool]]] = {}
    for p in store.partitions:
        part = store._parts[p]
        changes[p] = {src.encode(): (encode(st), False) for src, st in part.sources.items()}
        changes[p][CLOCK_KEY] = (encode_clock(part.through, part.clock_ms), False)
    group = unique("bench-restore")
    topic, changelog = unique("bench-restore-in"), f"{group}-episodes-changelog"
    create_topics(admin, topic)
    admin.create_topics([NewTopic(changelog, PARTITIONS, 1, topic_configs={"cleanup.policy": COMPACT})])
    records, _ = ChangelogWriter(changelog).records(changes)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for r in records:
        while True:
            try:
                producer.produce(r.topic, r.value, r.key, partition=r.partition)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("the changelog could not be written")
    alerts = unique("bench-restore-alerts")
    create_topics(admin, alerts)
    w = worker(bootstrap, model, topic, logs, group, alerts_topic=alerts, episodes=True)
    w.start()
    try:
        ready = w.wait_ready(600)
        wait_for(lambda: w.metrics()["ecg_episode_restore_seconds_count"] >= 1, 60, "the restore")
        metrics = w.metrics()
        assert w.proc is not None
        rss, peak = rss_mb(w.proc.pid)
    finally:
        w.stop()
    return {
        "sources": store.sources,
        "open": store.open,
        "changelog_records": len(records),
        "changelog_bytes": sum(len(r.value or b"") + len(r.key or b"") for r in records),
        "restore_s": round(metrics["ecg_episode_restore_seconds_sum"], 2),
        "restored_records": metrics["ecg_episode_restored_records_total"],
        "worker_sources": metrics["ecg_episode_sources"],
        "time_to_ready_s": round(ready, 2),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
    }
