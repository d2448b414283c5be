"""Options shared by the Kafka client commands (``replay``, ``watch``, ``demo``)."""

from __future__ import annotations

import argparse
import os

BOOTSTRAP_ENV = "ECG_BOOTSTRAP_SERVERS"  # the worker's variable, so one export serves every command
DEFAULT_BOOTSTRAP = "localhost:9092"


def add_bootstrap_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help=f"Kafka bootstrap servers [env {BOOTSTRAP_ENV}; default {DEFAULT_BOOTSTRAP}]",
    )


def bootstrap_servers(args: argparse.Namespace) -> str:
    """The flag, else the environment variable, else the default."""
    return args.bootstrap_servers or os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP
