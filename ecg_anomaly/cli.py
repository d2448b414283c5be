"""`ecg-anomaly`: one console script, one subcommand per job.

Each subcommand lives in the package that owns it and exposes
``configure(parser)``, which adds its options and sets ``func``. Command modules
must stay cheap to import (TensorFlow is imported lazily inside ``train``), so
that ``--help`` and the worker start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ecg_anomaly import __version__
from ecg_anomaly.errors import EcgAnomalyError

# (name, module, one-line help). The module is imported when the parser is built.
COMMANDS: list[tuple[str, str, str]] = [
    ("worker", "worker.cli", "score live beats from Kafka; publish anomaly events and dead letters"),
    (
        "train",
        "trainer.commands.train",
        "train the autoencoder, choose its threshold, export model.onnx + report",
    ),
    ("evaluate", "trainer.commands.evaluate", "metrics of an existing model.onnx on a labelled beats file"),
    ("score", "trainer.commands.score", "per-beat scores and anomaly flags of a beats file, as CSV"),
    ("replay", "ecg_anomaly.replay", "publish ECG5000 (or a beats file) to the input topic as a live feed"),
    ("watch", "ecg_anomaly.watch", "follow anomaly events (or --dlq dead letters), one readable line each"),
    ("redrive", "ecg_anomaly.redrive", "send dead letters back to their topic once their cause is fixed"),
    ("demo", "ecg_anomaly.demo", "model, local Kafka, worker and a replayed feed, with live numbers"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecg-anomaly",
        description="Real-time ECG heartbeat anomaly detection with an ONNX autoencoder and Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, help_text in COMMANDS:
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).configure(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EcgAnomalyError as exc:  # expected failures: one line, no traceback
        print(f"ecg-anomaly {args.command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 1))


if __name__ == "__main__":
    sys.exit(main())
