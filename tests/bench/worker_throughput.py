"""The worker under load: draining a pre-filled feed, scale-out, latency at a steady rate, time to ready.

Each run starts ``ecg-anomaly worker`` as a subprocess exactly as in production
(its defaults; scores topic off) with a new consumer group and new output
topics, and reads its own Prometheus metrics.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from kafka.admin import KafkaAdminClient

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker.metrics import LATENCY_STAGES
from tests.bench.common import (
    PARTITIONS,
    Feed,
    cpu_seconds,
    create_topics,
    drain_rate,
    histogram_quantile,
    rss_mb,
    steal_seconds,
    unique,
    worker,
)
from tests.support.worker import WorkerProcess, wait_for

ANOMALY = 'ecg_beats_scored_total{outcome="anomaly"}'
LAST_BATCH = "ecg_last_batch_timestamp_seconds"
LATENCY = "ecg_end_to_end_latency_seconds"
STAGE_LATENCY = "ecg_stage_latency_seconds"
# The latency feed sleeps only once it is this far ahead of its schedule: a sleep per beat (2,000 a
# second) cost the load generator CPU that the worker and the broker share; within a producer's
# 5 ms linger, when in those 2 ms a beat is handed over changes nothing the broker sees.
FEED_PACE_S = 0.002


def throughput(
    bootstrap: str,
    model: Path,
    admin: KafkaAdminClient,
    feed: Feed,
    logs: Path,
    processes: int = 1,
    **options: Any,
) -> dict[str, Any]:
    """``processes`` workers in one group drain ``feed``; beats/s from their summed consumed counters.

    ``options`` are extra worker flags (``linger_ms=2`` → ``--linger-ms 2``), for before/after runs.
    """
    anomalies, dlq = unique("bench-anom"), unique("bench-dlq")
    create_topics(admin, anomalies, dlq)
    group = unique("bench-group")
    workers = [
        worker(bootstrap, model, feed.topic, logs, group, anomaly_topic=anomalies, dlq_topic=dlq, **options)
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.wait_ready()
        cpu_at_ready = sum(cpu_seconds(_pid(w)) for w in workers)
        samples: list[tuple[float, float]] = []
        rss: list[tuple[float, float]] = []
        ended: list[float] = []  # the scrape's clock minus the workers' last batch's, when they say

        def consumed() -> bool:
            at, now = time.monotonic(), time.time()  # before the scrape: its parsing takes ms
            scraped = [w.metrics() for w in workers]
            total = sum(s["ecg_beats_consumed_total"] for s in scraped)
            samples.append((at, total))
            last_batch = max(s.get(LAST_BATCH, 0.0) for s in scraped)
            if total >= feed.beats and last_batch > 0:
                ended.append(now - last_batch)
            return total >= feed.beats

        wait_for(consumed, 900, f"{feed.beats} beats drained", interval=0.2)
        cpu = sum(cpu_seconds(_pid(w)) for w in workers) - cpu_at_ready
        rss = [rss_mb(_pid(w)) for w in workers]
        flagged = sum(w.metrics()[ANOMALY] for w in workers)
    finally:
        for w in workers:
            w.stop()
    return {
        "beats": feed.beats,
        "processes": processes,
        "beats_per_s": round(drain_rate(_ended(samples, ended), feed.beats)),
        "beats_per_s_at_scrape": round(drain_rate(samples, feed.beats)),
        "end": "last batch" if ended else "scrape",
        "cpu_us_per_beat": round(cpu / feed.beats * 1e6, 1),
        "anomaly_share": round(flagged / feed.beats, 3),
        "rss_mb": round(max(r for r, _ in rss), 1),
        "peak_rss_mb": round(max(p for _, p in rss), 1),
    }


def _ended(samples: list[tuple[float, float]], ended: list[float]) -> list[tuple[float, float]]:
    """The samples with the last one moved back to when the workers counted their last batch.

    The counters are scraped every 0.2 s, so the scrape that sees the drain done comes up to 0.2 s
    after it (0.1 s on average, 3 % of a 3.5 s drain) while the passthrough's own clock stops at
    its last acknowledgement. ``ecg_last_batch_timestamp_seconds`` says when; a worker without it
    (an older build) keeps the scrape's time, and ``beats_per_s_at_scrape`` is that for every run.
    """
    if not ended:
        return samples
    at, count = samples[-1]
    return [*samples[:-1], (at - ended[0], count)]


def _pid(w: WorkerProcess) -> int:
    assert w.proc is not None
    return w.proc.pid


def latency(
    bootstrap: str,
    model: Path,
    admin: KafkaAdminClient,
    beats: np.ndarray,
    rate: float,
    seconds: float,
    sources: int,
    logs: Path,
    warmup: float = 15.0,
    broker_pid: int | None = None,
    client: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A steady JSON feed at ``rate`` beats/s from ``sources`` sources; ``warmup`` s, then ``seconds`` timed.

    ``client``: librdkafka security settings for the feed and the reader (a secured listener at
    ``bootstrap``; the worker's own come in ``options``).

    Two independent measures: the worker's own ``ecg_end_to_end_latency_seconds``
    histogram (record timestamp → outputs acknowledged, every beat; the
    difference between snapshots at the start and end of the measured window),
    and a downstream reader of the anomaly topic that takes, per event, the
    input record's timestamp (set by the feed's producer at ``produce``) → the
    moment the event reached it. The warm-up is at the same rate: a broker JVM
    that has not yet compiled its hot paths answers in hundreds of ms at first
    (measured on this machine), which is the broker's start, not the steady state.

    Over the measured window it also takes what each process used of the CPUs (the broker's only
    when it is the local one, ``broker_pid``) and the hypervisor's steal: on a small machine that
    shares its cores, the tail is decided there as much as in the worker.

    The feed and the reader are confluent-kafka clients: on two cores the load
    generator competes with the worker for CPU, and kafka-python's pure-Python
    clients took 80% of a core here (measured with ``top``), more than the
    worker and the broker together, which showed up as the worker's tail latency.
    """
    topic, anomalies, dlq = unique("bench-lat-in"), unique("bench-lat-anom"), unique("bench-lat-dlq")
    create_topics(admin, topic, anomalies, dlq)
    w = worker(bootstrap, model, topic, logs, anomaly_topic=anomalies, dlq_topic=dlq, **options).start()
    received: list[tuple[int, float]] = []  # (input timestamp ms, received ms)
    stop = threading.Event()

    def read() -> None:
        group = unique("bench-lat-reader")
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, **(client or {}), "group.id": group, "enable.auto.commit": False}
        )
        # a new topic, read from its start: no event may slip past a late position
        consumer.assign([TopicPartition(anomalies, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        while not stop.is_set():
            messages = consumer.consume(1000, 0) or [consumer.poll(0.05)]
            now = time.time() * 1000
            received.extend(
                (orjson.loads(r.value())["input"]["timestamp"], now)
                for r in messages
                if r is not None and r.error() is None
            )
        consumer.close()

    reader = threading.Thread(target=read)
    total = int(rate * (warmup + seconds))
    warm = int(rate * warmup)
    before: dict[str, float] = {}
    measure_from_ms = 0.0
    cpu_before: dict[str, float] = {}
    cpu_after: dict[str, float] = {}
    try:
        w.wait_ready()
        pids = {"worker": _pid(w), "feed and reader (this process)": os.getpid()}
        if broker_pid is not None:
            pids["broker"] = broker_pid
        reader.start()
        # librdkafka's default linger (5 ms): at 1 ms the feed's produce requests (and the fetches
        # each one completes) kept the local broker at ~0.8 of a CPU instead of ~0.65 on this
        # 2-core machine, CPU the worker then waited for. The record timestamp is taken at
        # produce(), so the linger counts in both latency measures: it can only make them worse.
        producer = Producer({"bootstrap.servers": bootstrap, **(client or {}), "linger.ms": 5})
        headers = m.beat_headers()
        keys = [f"device-{s:04d}".encode() for s in range(sources)]
        encoded = [m.encode_beat_json(keys[i % sources].decode(), b) for i, b in enumerate(beats)]
        start = time.monotonic()
        for i in range(total):
            if i == warm:
                before, measure_from_ms = w.metrics(), time.time() * 1000
                cpu_before = _cpu_now(pids)
            producer.produce(topic, encoded[i % len(encoded)], keys[i % sources], headers=headers)
            producer.poll(0)
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > FEED_PACE_S:
                time.sleep(ahead)
        sent_rate = total / (time.monotonic() - start)
        cpu_after = _cpu_now(pids)
        if producer.flush(60):
            raise RuntimeError("the latency feed could not deliver every beat")
        wait_for(lambda: w.metrics()["ecg_beats_consumed_total"] >= total, 120, "every beat consumed")
        metrics = w.metrics()
        window = {
            k: v - before.get(k, 0.0)
            for k, v in metrics.items()
            if k.startswith((LATENCY + "_bucket", STAGE_LATENCY + "_bucket"))
        }
        wait_for(lambda: len(received) >= metrics[ANOMALY], 30, "every event")
    finally:
        stop.set()
        if reader.is_alive():
            reader.join()
        w.stop()
    lat = np.array([seen - ts for ts, seen in received if ts >= measure_from_ms])
    p50, p95, p99 = (round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99))
    return {
        "rate": rate,
        "sent_rate": round(sent_rate),
        "sources": sources,
        "warmup_s": warmup,
        "measured_s": seconds,
        "beats": total,
        "events_measured": int(lat.size),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": round(float(lat.max()), 1),
        "worker_histogram_p50_ms": histogram_quantile(window, LATENCY, 0.5),
        "worker_histogram_p95_ms": histogram_quantile(window, LATENCY, 0.95),
        "worker_histogram_p99_ms": histogram_quantile(window, LATENCY, 0.99),
        "cpu_share": {  # of one CPU, over the measured window
            name: round((cpu_after[name] - cpu_before[name]) / (cpu_after["wall"] - cpu_before["wall"]), 2)
            for name in cpu_before
            if name != "wall"
        },
        "stages_ms": {  # the worker's split of the same window: where the time goes
            stage: {
                f"p{round(q * 100)}": histogram_quantile(
                    {k: v for k, v in window.items() if f'stage="{stage}"' in k}, STAGE_LATENCY, q
                )
                for q in (0.5, 0.95, 0.99)
            }
            for stage in LATENCY_STAGES
        },
    }


def _cpu_now(pids: dict[str, int]) -> dict[str, float]:
    return {
        **{name: cpu_seconds(pid) for name, pid in pids.items()},
        "steal": steal_seconds(),
        "wall": time.monotonic(),
    }


def time_to_ready(
    bootstrap: str, model: Path, admin: KafkaAdminClient, runs: int, logs: Path, python: str | None = None
) -> dict[str, Any]:
    """Process start → ``/readyz`` 200 (model loaded, broker connected, group joined)."""
    topic = unique("bench-ready")
    create_topics(admin, topic)
    times = []
    for _ in range(runs):
        w = worker(bootstrap, model, topic, logs, python=python).start()
        try:
            times.append(w.wait_ready())
        finally:
            w.stop()
    return {"starts": runs, "median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2)}
