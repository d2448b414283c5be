"""``ecg-anomaly demo`` (what ``make demo`` runs): the whole system on one machine, on real data.

Model (trained once, then reused) → local Kafka broker → topics → worker →
the test split replayed as a live feed with a few malformed records → a
summary every few seconds read from the worker's own ``/metrics``. The end of
the replay or Ctrl-C stops everything the demo started; a broker that was
already running is used and left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from kafka import KafkaProducer

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.tools import demo_stack as ds
from ecg_anomaly.tools.faults import FaultInjector
from ecg_anomaly.tools.feed import Replayer, ReplayPlan, ReplayStats, load_beats
from ecg_anomaly.tools.live_stats import Snapshot, final_lines, live_line, scrape
from ecg_anomaly.tools.replay import producer_config

INPUT_TOPIC = "ecg.beats"
ANOMALY_TOPIC = "ecg.anomalies"
DLQ_TOPIC = "ecg.beats.dlq"
CATCH_UP_TIMEOUT = 60.0  # seconds for the worker to finish the feed after the replay ends


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, default=Path("artifacts/model.onnx"), help="default: %(default)s"
    )
    parser.add_argument("--preset", default="default", help="training preset if the model is missing")
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=int(os.environ.get("KAFKA_PORT", "9092")),
        help="local broker port [env KAFKA_PORT; default 9092]; a broker already there is used",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=8080, help="worker /metrics port (another if taken; default 8080)"
    )
    parser.add_argument("--rate", type=float, default=400.0, help="beats/s (default: %(default)s)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of feed; the test split loops (default: 60)"
    )
    parser.add_argument("--bad-rate", type=float, default=0.01, help="malformed records per beat (0.01)")
    parser.add_argument("--sources", type=int, default=16, help="simulated sources (default: 16)")
    parser.add_argument("--partitions", type=int, default=6, help="input topic partitions (default: 6)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between summary lines")
    parser.set_defaults(func=run)


def say(line: str) -> None:
    print(f"demo: {line}", flush=True)


def run(args: argparse.Namespace) -> int:
    if min(args.rate, args.duration, args.interval, args.sources, args.partitions) <= 0:
        raise EcgAnomalyError("--rate, --duration, --interval, --sources and --partitions must be positive")
    if not 0.0 <= args.bad_rate <= 1.0:
        raise EcgAnomalyError(f"--bad-rate must be between 0 and 1, got {args.bad_rate}")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            say("still stopping what the demo started; one moment")
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            _run(args, stack, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say(f"finished in {time.monotonic() - started:.0f} s; nothing left running")
    return 130 if stop.is_set() else 0


def _run(args: argparse.Namespace, stack: ExitStack, stop: threading.Event) -> None:
    ds.ensure_model(args.model, args.preset, say)
    if stop.is_set():
        return
    bootstrap = ds.start_broker(stack, args.kafka_port, say)
    if stop.is_set():
        return
    group = f"ecg-demo-{time.strftime('%Y%m%d-%H%M%S')}"
    topics = {INPUT_TOPIC: args.partitions, ANOMALY_TOPIC: 3, DLQ_TOPIC: 1}
    ds.create_topics(bootstrap, topics, group, INPUT_TOPIC, say)
    port = args.metrics_port if ds.port_free(args.metrics_port) else ds.free_port()
    worker_args = ["--model", str(args.model), "--bootstrap-servers", bootstrap, "--group-id", group]
    worker = ds.DemoWorker(stack, worker_args, port, args.model.parent / "demo" / "worker.log", say)
    worker.wait_ready(90, stop.is_set)
    if stop.is_set():
        return
    say(f"worker ready (consumer group {group}); metrics at {worker.metrics_url}")
    say(
        "follow the anomalies in another terminal: "
        f".venv/bin/ecg-anomaly watch --bootstrap-servers {bootstrap}"
    )

    beats = load_beats("ecg5000", "auto", "test", 0.2, 21)
    limit = max(1, round(args.rate * args.duration))
    plan = ReplayPlan(INPUT_TOPIC, sources=args.sources, rate=args.rate, limit=limit, loop=True)
    producer = KafkaProducer(**producer_config(bootstrap))
    stack.callback(producer.close, timeout=10)
    replayer = Replayer(producer, plan, beats, FaultInjector(args.bad_rate) if args.bad_rate else None)
    say(
        f"replaying the ECG5000 test split ({len(beats.values):,} beats the model never saw) in a loop: "
        f"{limit:,} beats at {args.rate:g} beats/s over {args.sources} sources, "
        f"{args.bad_rate:.1%} malformed records mixed in"
    )
    feed = threading.Thread(target=replayer.run, name="replay", daemon=True)
    first = previous = _scrape(worker)
    feed.start()
    next_line = first.at + args.interval
    while feed.is_alive() and not stop.wait(0.2):
        if time.monotonic() >= next_line:
            current = _scrape(worker)
            say(live_line(current, previous, current.at - first.at))
            previous, next_line = current, next_line + args.interval
    replayer.stop()
    feed.join()
    last = _catch_up(worker, replayer.stats.delivered, 5.0 if stop.is_set() else CATCH_UP_TIMEOUT)
    stats = replayer.stats
    say(
        f"replay {'stopped' if stop.is_set() else 'done'}: {stats.beats:,} beats + "
        f"{sum(stats.bad.values()):,} malformed records sent, {stats.delivered:,} acknowledged"
    )
    for line in [*final_lines(last, first), *_checks(last, stats, args.model)]:
        say(line)


def _scrape(worker: ds.DemoWorker) -> Snapshot:
    try:
        return scrape(worker.metrics_url, time.monotonic())
    except OSError as exc:
        state = "running" if worker.alive() else f"exited with {worker.proc.returncode}"
        raise EcgAnomalyError(
            f"cannot read the worker's metrics ({exc}); worker {state}:\n{worker.tail()}"
        ) from exc


def _catch_up(worker: ds.DemoWorker, delivered: int, timeout: float) -> Snapshot:
    """Scrape until every acknowledged record has an outcome (scored or dead-lettered), or ``timeout``."""
    deadline = time.monotonic() + timeout
    snapshot = _scrape(worker)
    while snapshot.outcomes < delivered and time.monotonic() < deadline:
        time.sleep(0.5)
        snapshot = _scrape(worker)
    return snapshot


def _checks(snapshot: Snapshot, stats: ReplayStats, model: Path) -> list[str]:
    """Cross-checks a reader can trust: outcomes balance, dead letters as injected, offline metrics."""
    lines = []
    if snapshot.outcomes != stats.delivered:
        lines.append(
            f"WARNING: {stats.delivered:,} records acknowledged by the broker, "
            f"{snapshot.outcomes:,.0f} outcomes counted by the worker"
        )
    expected = {reason: float(n) for reason, n in stats.bad.items()}
    got = {reason: n for reason, n in snapshot.dead_letters.items() if n}
    lines.append(
        "dead letters by reason match the injected faults"
        if got == expected
        else f"WARNING: dead letters by reason {got} differ from the injected faults {expected}"
    )
    metrics_file = model.parent / "metrics.json"
    if metrics_file.is_file():
        offline = json.loads(metrics_file.read_text())["metrics"]["anomaly_positive"]
        lines.append(
            f"the trainer's offline test metrics ({metrics_file}): precision {offline['precision']:.3f}, "
            f"recall {offline['recall']:.3f}"
        )
    return lines
