"""Worker benchmark: throughput (JSON, binary), end-to-end latency at a steady rate, memory, time to ready.

Run: ``.venv/bin/python -m tests.bench.worker_throughput`` (or ``make bench``).
Starts its own local broker unless ``KAFKA_BOOTSTRAP_SERVERS`` is set, trains
the small test artifact unless ``--model`` is given, and runs the worker as a
subprocess exactly as in production (``python -m worker``). Results are
printed and written to ``bench-results/worker.json``. A benchmark, not a test:
numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from schemas import messages as m
from tests.support.broker import REPO, LocalBroker
from tests.support.worker import WorkerProcess, wait_for

PARTITIONS = 3


def _topics(admin: KafkaAdminClient, *names: str) -> None:
    admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])


def _fill(bootstrap: str, topic: str, beats: np.ndarray, count: int, binary: bool) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024)
    headers = m.beat_headers(m.BINARY_CONTENT_TYPE if binary else m.JSON_CONTENT_TYPE)
    encoded = [
        m.encode_beat_binary(b) if binary else m.encode_beat_json(f"source-{i % 50}", b, beat_id=f"b{i}")
        for i, b in enumerate(beats)
    ]
    for i in range(count):
        producer.send(
            topic, key=f"source-{i % 50}".encode(), value=encoded[i % len(encoded)], headers=headers
        )
    producer.flush(300)
    producer.close()


def _rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _worker(bootstrap: str, model: Path, topic: str, logs: Path, **options: Any) -> WorkerProcess:
    return WorkerProcess(
        bootstrap, model, topic, f"bench-{uuid.uuid4().hex[:8]}", logs / f"{topic}.log", **options
    )


def throughput(
    bootstrap: str,
    model: Path,
    admin: KafkaAdminClient,
    beats: np.ndarray,
    count: int,
    binary: bool,
    logs: Path,
) -> dict[str, float]:
    kind = "binary" if binary else "json"
    topic, anomalies, dlq = (f"bench-{kind}-{x}-{uuid.uuid4().hex[:6]}" for x in ("in", "anom", "dlq"))
    _topics(admin, topic, anomalies, dlq)
    _fill(bootstrap, topic, beats, count, binary)
    worker = _worker(bootstrap, model, topic, logs, anomaly_topic=anomalies, dlq_topic=dlq).start()
    try:
        worker.wait_ready()
        samples: list[tuple[float, float]] = []

        def consumed() -> bool:
            samples.append((time.monotonic(), worker.metrics()["ecg_beats_consumed_total"]))
            return samples[-1][1] >= count

        wait_for(consumed, 600, f"{count} {kind} beats", interval=0.2)
        assert worker.proc is not None
        rss, peak = _rss_mb(worker.proc.pid)
        metrics = worker.metrics()
    finally:
        worker.stop()
    started = next(s for s in samples if s[1] > 0)
    rate = (count - started[1]) / (samples[-1][0] - started[0])
    return {
        "beats": count,
        "beats_per_s": round(rate),
        "anomaly_share": round(metrics['ecg_beats_scored_total{outcome="anomaly"}'] / count, 3),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
    }


def latency(
    bootstrap: str,
    model: Path,
    admin: KafkaAdminClient,
    beats: np.ndarray,
    rate: float,
    seconds: float,
    logs: Path,
) -> dict[str, float]:
    """Steady JSON stream at ``rate``; a downstream reader of the anomaly topic measures, per event,
    input record timestamp → event received (events carry the input timestamp). Scores topic off."""
    topic, anomalies, dlq = (f"bench-lat-{x}-{uuid.uuid4().hex[:6]}" for x in ("in", "anom", "dlq"))
    _topics(admin, topic, anomalies, dlq)
    worker = _worker(bootstrap, model, topic, logs, anomaly_topic=anomalies, dlq_topic=dlq).start()
    received: list[tuple[int, float]] = []  # (input timestamp ms, received ms)
    stop = threading.Event()

    def read() -> None:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=5, enable_auto_commit=False)
        consumer.assign([TopicPartition(anomalies, p) for p in range(PARTITIONS)])
        while not stop.is_set():
            for recs in consumer.poll(timeout_ms=50).values():
                now = time.time() * 1000
                received.extend((json.loads(r.value)["input"]["timestamp"], now) for r in recs)
        consumer.close(timeout_ms=2000)

    reader = threading.Thread(target=read)
    total = int(rate * seconds)
    try:
        worker.wait_ready()
        reader.start()
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)  # a feed batches a little, too
        headers = m.beat_headers()
        encoded = [m.encode_beat_json(f"source-{i % 50}", b) for i, b in enumerate(beats)]
        start = time.monotonic()
        for i in range(total):
            producer.send(
                topic, key=f"source-{i % 50}".encode(), value=encoded[i % len(encoded)], headers=headers
            )
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        producer.flush(60)
        producer.close()
        wait_for(lambda: worker.metrics()["ecg_beats_consumed_total"] >= total, 120, "every beat consumed")
        metrics = worker.metrics()
        wait_for(
            lambda: len(received) >= metrics['ecg_beats_scored_total{outcome="anomaly"}'], 30, "every event"
        )
    finally:
        stop.set()
        if reader.is_alive():
            reader.join()
        worker.stop()
    first = min(ts for ts, _ in received)
    lat = np.array(
        [seen - ts for ts, seen in received if ts - first > 1000]
    )  # skip the first second (warm-up)
    return {
        "rate": rate,
        "beats": total,
        "events_measured": int(lat.size),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "max_ms": round(float(lat.max()), 1),
        "worker_histogram_p50_ms": _histogram_quantile(metrics, "ecg_end_to_end_latency_seconds", 0.5),
        "worker_histogram_p99_ms": _histogram_quantile(metrics, "ecg_end_to_end_latency_seconds", 0.99),
    }


def _histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float:
    """Prometheus' histogram_quantile (linear within the bucket), in ms."""
    buckets = sorted(
        (float(k.split('le="')[1].rstrip('"}')), v)
        for k, v in metrics.items()
        if k.startswith(name + "_bucket")
    )
    total = buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= q * total:
            if bound == float("inf"):
                return round(lower_bound * 1000, 1)
            share = (q * total - lower_count) / max(count - lower_count, 1)
            return round((lower_bound + (bound - lower_bound) * share) * 1000, 1)
        lower_bound, lower_count = bound, count
    return float("nan")


def time_to_ready(
    bootstrap: str, model: Path, admin: KafkaAdminClient, runs: int, logs: Path
) -> dict[str, float]:
    topic = f"bench-ready-{uuid.uuid4().hex[:6]}"
    _topics(admin, topic)
    times = []
    for _ in range(runs):
        worker = _worker(bootstrap, model, topic, logs).start()
        try:
            times.append(worker.wait_ready())
        finally:
            worker.stop()
    return {"runs": runs, "median_s": round(statistics.median(times), 2), "max_s": round(max(times), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model.onnx (default: train the small test artifact)")
    parser.add_argument("--beats", type=int, default=200_000, help="beats per throughput run")
    parser.add_argument("--rate", type=float, default=2000.0, help="beats/s of the latency run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency run")
    parser.add_argument(
        "--only",
        choices=("ready", "binary", "json", "binary_normal_only", "json_normal_only", "latency"),
        help="run one part",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "worker.json")
    args = parser.parse_args()

    from tests.support.artifact import build_small_artifact, load_test_split

    beats, labels = load_test_split()
    normal = beats[labels == 0]  # few anomaly events to publish: the decode/consume ceiling
    logs = Path(tempfile.mkdtemp(prefix="ecg-bench-"))
    with ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or stack.enter_context(LocalBroker()).bootstrap
        model = args.model or build_small_artifact(logs / "model")
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        stack.callback(admin.close)
        parts = {
            "time_to_ready": lambda: time_to_ready(bootstrap, model, admin, 3, logs),
            "binary": lambda: throughput(bootstrap, model, admin, beats, args.beats, True, logs),
            "json": lambda: throughput(bootstrap, model, admin, beats, args.beats, False, logs),
            "binary_normal_only": lambda: throughput(bootstrap, model, admin, normal, args.beats, True, logs),
            "json_normal_only": lambda: throughput(bootstrap, model, admin, normal, args.beats, False, logs),
            "latency": lambda: latency(bootstrap, model, admin, beats, args.rate, args.seconds, logs),
        }
        results: dict[str, Any] = {"cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()}
        for name, run in parts.items():
            if args.only in (None, name.replace("time_to_", "")):
                results[name] = run()
        results["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"worker logs: {logs}")


if __name__ == "__main__":
    main()
