"""`ecg-anomaly`: one console script, one subcommand per job.

The top-level parser knows each subcommand's name and one line of help only. The module of a
subcommand (``configure(parser)`` adds its options and sets ``func``) is imported when that
subcommand runs or its ``--help`` is asked for, never to build the parser of another one: the worker
does not import the trainer or the tools, and ``ecg-anomaly worker`` starts without them. Nothing
reads the environment while a parser is built.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ecg_anomaly import __version__
from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.base.options import Parser

# (name, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    (
        "worker",
        "ecg_anomaly.worker.cli",
        "score live beats from Kafka; publish anomaly events and dead letters",
    ),
    (
        "train",
        "ecg_anomaly.trainer.commands.train",
        "train the autoencoder, choose its threshold, export model.onnx + report",
    ),
    (
        "evaluate",
        "ecg_anomaly.trainer.commands.evaluate",
        "metrics of an existing model.onnx on a labelled beats file",
    ),
    (
        "score",
        "ecg_anomaly.trainer.commands.score",
        "per-beat scores and anomaly flags of a beats file, as CSV",
    ),
    (
        "replay",
        "ecg_anomaly.tools.replay",
        "publish ECG5000 (or a beats file) to the input topic as a live feed",
    ),
    (
        "watch",
        "ecg_anomaly.tools.watch",
        "follow anomaly events (or --dlq dead letters) a line each, or on a live page (--web)",
    ),
    (
        "redrive",
        "ecg_anomaly.tools.redrive",
        "send dead letters back to their topic once their cause is fixed",
    ),
    ("demo", "ecg_anomaly.tools.demo", "model, local Kafka, worker and a replayed feed, with live numbers"),
    (
        "topics",
        "ecg_anomaly.tools.topics",
        "check the worker's topics on a cluster, or --create the missing ones",
    ),
]


def top_parser() -> argparse.ArgumentParser:
    """``ecg-anomaly [--version] COMMAND ...``: the commands, without their options."""
    parser = Parser(
        prog="ecg-anomaly",
        description="Real-time ECG heartbeat anomaly detection with an ONNX autoencoder and Kafka.",
        epilog="Run 'ecg-anomaly COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, _module, help_text in COMMANDS:
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The full parser of one subcommand (importing its module)."""
    module, help_text = next((m, h) for n, m, h in COMMANDS if n == name)
    parser = Parser(prog=f"ecg-anomaly {name}", description=help_text)
    importlib.import_module(module).configure(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top, rest = top_parser().parse_known_args(argv[:1])  # the command name (or --help, --version)
    args = command_parser(top.command).parse_args(argv[1:] + rest)
    try:
        return int(args.func(args) or 0)
    except EcgAnomalyError as exc:  # expected failures: one line, no traceback
        print(f"ecg-anomaly {top.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
