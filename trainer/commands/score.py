"""``ecg-anomaly score --model M --data D --out F``: per-beat scores and anomaly flags as CSV.

Rows may be unlabelled (just the values); needs onnxruntime and numpy only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecg_anomaly.schemas.datasets import add_data_options


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="model.onnx written by 'ecg-anomaly train'")
    add_data_options(parser, default=None)
    parser.add_argument(
        "--out", required=True, type=Path, help="CSV to write: index,score,anomaly (0-based beat index)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ecg_anomaly.schemas.datasets import load_dataset
    from ecg_anomaly.trainer.preflight import writable_file, write_file
    from ecg_anomaly.trainer.scoring import ScoringModel

    writable_file(args.out, "--out")
    model = ScoringModel.load(args.model)
    data = load_dataset(args.data, args.format, input_length=model.metadata.input_length, labelled=False)
    scores, _ = model.score(data.beats)
    flagged = scores > model.metadata.threshold
    lines = [
        "index,score,anomaly",
        *(f"{i},{s:.8g},{int(f)}" for i, (s, f) in enumerate(zip(scores, flagged, strict=True))),
    ]
    write_file(args.out, "--out", "\n".join(lines) + "\n")
    print(
        f"{len(scores)} beats scored, {int(flagged.sum())} above the threshold "
        f"{model.metadata.threshold:.6g}; wrote {args.out}",
        file=sys.stderr,
    )
    return 0
