"""``ecg-anomaly demo`` (what ``make demo`` runs): the whole system on one machine, on real data.

Model (trained once, then reused) → local Kafka broker → topics → worker (with
alert episodes per source, ``--episodes``) → the test split replayed as a live
feed with a few malformed records → a summary every few seconds read from the
worker's own ``/metrics``. The end of
the replay or Ctrl-C stops everything the demo started; a broker that was
already running is used and left alone. Given ``--bootstrap-servers`` (or
``ECG_BOOTSTRAP_SERVERS``) the demo uses that cluster instead, with the same
security options as every command; its principal creates the topics and sets
the group's offsets, and the worker connects the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.base.kafka import CONNECTION_OPTIONS, KafkaConnection
from ecg_anomaly.base.options import Option, add_options, finite, integer, positive, resolve
from ecg_anomaly.tools import demo_stack as ds
from ecg_anomaly.tools.faults import FaultInjector
from ecg_anomaly.tools.feed import Replayer, ReplayPlan, ReplayStats, load_beats
from ecg_anomaly.tools.live_page import WEB_PORT_HELP, LivePage, port_or_any
from ecg_anomaly.tools.live_stats import Snapshot, final_lines, live_line, scrape
from ecg_anomaly.trainer.presets import PRESETS

INPUT_TOPIC = "ecg.beats"
ANOMALY_TOPIC = "ecg.anomalies"
DLQ_TOPIC = "ecg.beats.dlq"
ALERTS_TOPIC = "ecg.alerts"  # the worker creates its episodes' changelog itself (<group>-episodes-changelog)
CATCH_UP_TIMEOUT = 60.0  # seconds for the worker to finish the feed after the replay ends


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("expected a port number, 1-65535")
    return int(text)


# No environment variables of its own: the demo runs on this machine, where KAFKA_PORT may be a
# Kubernetes service link (tcp://10.0.0.7:9092) as well as make's setting; `make demo` passes it as
# --kafka-port. The connection options (ECG_* variables too) are every command's.
OPTIONS: tuple[Option, ...] = (
    Option("model", None, Path("artifacts/model.onnx"), "model file; trained first if missing", Path),
    Option("preset", None, "default", "training preset if the model is missing", choices=tuple(PRESETS)),
    Option(
        "kafka_port",
        None,
        9092,
        "local broker port (make demo: KAFKA_PORT); a broker already there is used",
        _port,
    ),
    Option(
        "metrics_port",
        None,
        8080,
        "worker /metrics port (another if taken)",
        _port,
    ),
    Option("web_port", None, 8088, f"{WEB_PORT_HELP}; another if taken", port_or_any),
    Option("rate", None, 400.0, "beats/s", finite, check=positive, check_text="a positive number"),
    Option(
        "duration",
        None,
        60.0,
        "seconds of feed; the test split loops",
        finite,
        check=positive,
        check_text="a positive number",
    ),
    Option(
        "bad_rate",
        None,
        0.01,
        "malformed records per beat",
        finite,
        check=lambda v: 0 <= v <= 1,
        check_text="a probability between 0 and 1",
    ),
    Option(
        "sources", None, 16, "simulated sources", integer, check=positive, check_text="a positive integer"
    ),
    Option(
        "partitions",
        None,
        6,
        "input topic partitions",
        integer,
        check=positive,
        check_text="a positive integer",
    ),
    Option(
        "interval",
        None,
        5.0,
        "seconds between summary lines",
        finite,
        check=positive,
        check_text="a positive number",
    ),
)
# Every command's connection options; without a bootstrap address the demo starts a local broker.
DEMO_CONNECTION_OPTIONS = tuple(
    replace(
        o,
        default="",
        default_text="(a local broker on --kafka-port)",
        help="an existing cluster to use instead of a local broker, host:port[,...]",
    )
    if o.name == "bootstrap_servers"
    else o
    for o in CONNECTION_OPTIONS
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, (*OPTIONS, *DEMO_CONNECTION_OPTIONS))
    parser.set_defaults(func=run)


def say(line: str) -> None:
    print(f"demo: {line}", flush=True)


def run(args: argparse.Namespace) -> int:
    values = resolve((*OPTIONS, *DEMO_CONNECTION_OPTIONS), args, os.environ)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            say("still stopping what the demo started; one moment")
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            _run(values, stack, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say(f"finished in {time.monotonic() - started:.0f} s; nothing left running")
    return 130 if stop.is_set() else 0


def _run(values: dict[str, Any], stack: ExitStack, stop: threading.Event) -> None:
    model: Path = values["model"]
    ds.ensure_model(model, values["preset"], say)
    if stop.is_set():
        return
    own_cluster = bool(values["bootstrap_servers"])
    if own_cluster:
        connection = KafkaConnection.from_values(values, os.environ)
        say(f"broker: using {connection.describe()}")
    else:
        bootstrap = ds.start_broker(stack, values["kafka_port"], say)
        connection = KafkaConnection(bootstrap, connect_timeout=values["connect_timeout"])
    if stop.is_set():
        return
    bootstrap = connection.bootstrap_servers
    group = f"ecg-demo-{time.strftime('%Y%m%d-%H%M%S')}"
    topics = {INPUT_TOPIC: values["partitions"], ANOMALY_TOPIC: 3, DLQ_TOPIC: 1, ALERTS_TOPIC: 3}
    try:
        ds.create_topics(connection, topics, group, INPUT_TOPIC, say)
    except EcgAnomalyError as exc:
        if own_cluster:
            raise
        raise EcgAnomalyError(
            f"{exc}; if another program holds the port, choose another: KAFKA_PORT=19092 make demo"
        ) from None
    port = values["metrics_port"] if ds.port_free(values["metrics_port"]) else ds.free_port()
    worker_args = ["--model", str(model), "--group-id", group, *_connection_flags(values, bootstrap)]
    worker_args += ["--episodes", "--alerts-topic", ALERTS_TOPIC]
    worker = ds.DemoWorker(stack, worker_args, port, model.parent / "demo" / "worker.log", say)
    worker.wait_ready(90, stop.is_set)
    if stop.is_set():
        return
    say(f"worker ready (consumer group {group}); metrics at {worker.metrics_url}")
    _serve_page(stack, connection, model, worker.metrics_url, values["web_port"])
    security = " and the same security options" if connection.security_protocol != "PLAINTEXT" else ""
    say(
        "follow the anomalies in another terminal: "
        f".venv/bin/ecg-anomaly watch --bootstrap-servers {bootstrap}{security}; "
        "the alert episodes (one per run of abnormal beats of a source, not one per beat): "
        f".venv/bin/ecg-anomaly watch --alerts --bootstrap-servers {bootstrap}"
    )

    beats = load_beats("ecg5000", "auto", "test", 0.2, 21)
    rate, bad_rate, sources = values["rate"], values["bad_rate"], values["sources"]
    limit = max(1, round(rate * values["duration"]))
    plan = ReplayPlan(INPUT_TOPIC, sources=sources, rate=rate, limit=limit, loop=True)
    faults = FaultInjector(bad_rate) if bad_rate else None
    replayer = Replayer(connection, plan, beats, faults, client_id="ecg-demo-replay")
    say(
        f"replaying the ECG5000 test split ({len(beats.values):,} beats the model never saw) in a loop: "
        f"{limit:,} beats at {rate:g} beats/s over {sources} sources, "
        f"{bad_rate:.1%} malformed records mixed in"
    )
    feed = threading.Thread(target=replayer.run, name="replay", daemon=True)
    first = previous = _scrape(worker)
    feed.start()
    stack.callback(feed.join, 5.0)  # after abandon(), below: on a failure the feed waits for nothing
    stack.callback(replayer.abandon)
    interval = values["interval"]
    next_line = first.at + interval
    while feed.is_alive() and not stop.wait(0.2):
        if time.monotonic() >= next_line:
            current = _scrape(worker)
            say(live_line(current, previous, current.at - first.at, episodes=True))
            previous, next_line = current, next_line + interval
    replayer.stop()
    feed.join()
    if replayer.lost:  # the broker vanished: the worker cannot finish, nothing to wait for
        raise EcgAnomalyError(replayer.lost)
    last = _catch_up(worker, replayer.stats.delivered, 5.0 if stop.is_set() else CATCH_UP_TIMEOUT)
    stats = replayer.stats
    say(
        f"replay {'stopped' if stop.is_set() else 'done'}: {stats.beats:,} beats + "
        f"{sum(stats.bad.values()):,} malformed records sent, {stats.delivered:,} acknowledged"
    )
    for line in [*final_lines(last, first, episodes=True), *_checks(last, stats, model)]:
        say(line)


def _serve_page(stack: ExitStack, connection: KafkaConnection, model: Path, metrics: str, port: int) -> None:
    page = LivePage(connection, ANOMALY_TOPIC, model, metrics, episodes=True)
    url = page.start(stack, port if port == 0 or ds.port_free(port) else 0)
    say(
        f"live page: {url} (the worker's numbers and open alert episodes, flagged beats drawn with "
        "their per-sample error)"
    )


def _connection_flags(values: dict[str, Any], bootstrap: str) -> list[str]:
    """The worker's connection flags: the demo's own (secrets only as the files or variables given)."""
    flags = ["--bootstrap-servers", bootstrap]
    for option in DEMO_CONNECTION_OPTIONS:
        value = values[option.name]
        if option.name != "bootstrap_servers" and value != option.default:
            flags += [option.flag, str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


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
