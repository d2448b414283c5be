"""``ecg-anomaly evaluate --model M --data D``: test metrics of an existing artifact on a labelled file.

Needs onnxruntime and numpy only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ecg_anomaly.schemas.datasets import add_data_options


def positive_threshold(text: str) -> float:
    """A threshold to try: a positive finite number, refused by the parser (exit 2) before any work."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"a threshold is a positive finite number, got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="model.onnx written by 'ecg-anomaly train'")
    add_data_options(parser, default=None)
    parser.add_argument("--out", type=Path, help="also write the metrics as JSON to this file")
    parser.add_argument(
        "--threshold",
        type=positive_threshold,
        help="evaluate at this threshold instead of the artifact's (a positive number)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ecg_anomaly.schemas.datasets import load_dataset
    from ecg_anomaly.trainer.evaluation import evaluate, format_table
    from ecg_anomaly.trainer.preflight import writable_file, write_file
    from ecg_anomaly.trainer.scoring import ScoringModel

    if args.out is not None:
        writable_file(args.out, "--out")
    model = ScoringModel.load(args.model)
    meta = model.metadata if args.threshold is None else model.metadata.with_threshold(args.threshold)
    data = load_dataset(args.data, args.format, input_length=meta.input_length)
    scores, _ = model.score(data.beats)
    metrics = evaluate(scores, data.is_anomaly, meta.threshold, data.classes)
    print(format_table(metrics))
    if args.out is not None:
        document = {
            "metrics": metrics,
            "model_version": meta.model_version,
            "threshold_policy": meta.threshold_policy,
            "threshold_params": meta.threshold_params,
            "data": data.source,
        }
        write_file(args.out, "--out", json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0
