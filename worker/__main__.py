"""``python -m worker``: the worker alone, without building the other subcommands' parsers."""

import argparse
import sys

from worker.cli import configure

parser = argparse.ArgumentParser(prog="ecg-anomaly worker", description="Score live ECG beats from Kafka.")
configure(parser)
args = parser.parse_args()
sys.exit(args.func(args))
