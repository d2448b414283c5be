"""``ecg-anomaly train``: options → :class:`TrainConfig` → :func:`trainer.train.train`.

TensorFlow is imported only when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.schemas.datasets import add_data_options
from ecg_anomaly.trainer.presets import ARCHITECTURES, PRESETS, SCORES, TrainConfig
from ecg_anomaly.trainer.thresholds import POLICIES

# The option that sets each policy's parameter, and its default when the policy is chosen on the command line.
POLICY_PARAMS: dict[str, tuple[str, float] | None] = {
    "mean_std": ("k", 1.0),
    "percentile": ("q", 99.0),
    "false_alarm_rate": ("rate", 0.01),
    "max_f1": None,
    "smoothed_f1": None,
}


def configure(parser: argparse.ArgumentParser) -> None:
    add_data_options(parser)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="default",
        help="default (ours, the default), tutorial (the TensorFlow tutorial exactly), tiny (seconds; tests)",
    )
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts"), help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=1, help="seeds python, numpy and TensorFlow (default: 1)")
    parser.add_argument("--test-size", type=float, default=0.2, help="test split fraction (default: 0.2)")
    parser.add_argument("--split-seed", type=int, default=21, help="test split random_state (default: 21)")
    parser.add_argument("--model-version", help="default: <UTC timestamp>-<preset>-s<seed>")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's own log lines")
    parser.add_argument("--no-report", action="store_true", help="skip report.html and its plots")
    model = parser.add_argument_group("model (override the preset)")
    model.add_argument("--architecture", choices=ARCHITECTURES, help="dense or conv (the default preset's)")
    model.add_argument(
        "--encoder", type=_sizes, metavar="N,N,...", help="dense: encoder layer sizes, e.g. 128,64"
    )
    model.add_argument("--embedding", type=int, metavar="N", help="embedding (bottleneck) size")
    model.add_argument("--epochs", type=int, help="maximum epochs")
    model.add_argument("--batch-size", type=int)
    model.add_argument("--learning-rate", type=float)
    model.add_argument(
        "--validation-fraction", type=float, help="part of the training split held out (stratified)"
    )
    model.add_argument("--patience", type=int, help="early-stopping patience in epochs; 0 turns it off")
    model.add_argument(
        "--plateau-patience",
        type=int,
        help="halve the learning rate after N epochs without improvement; 0: off",
    )
    model.add_argument(
        "--score",
        choices=SCORES,
        help="fused (the default preset's: reconstruction error with the code-space distance to the nearest "
        "training normals) or mae (mean absolute error, the tutorial's)",
    )
    threshold = parser.add_argument_group("threshold (override the preset)")
    threshold.add_argument("--threshold-policy", choices=POLICIES)
    threshold.add_argument("--threshold-k", type=float, help="mean_std: mean + k * std (default k 1)")
    threshold.add_argument(
        "--threshold-q", type=float, help="percentile: q of validation normals (default 99)"
    )
    threshold.add_argument(
        "--threshold-rate", type=float, help="false_alarm_rate: target rate (default 0.01)"
    )
    parser.set_defaults(func=run)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset with every given option applied; inconsistent options are a :class:`ConfigError`."""
    preset = PRESETS[args.preset]
    policy = args.threshold_policy or preset.threshold_policy
    params: dict[str, Any] = dict(preset.threshold_params) if policy == preset.threshold_policy else {}
    given = {"k": args.threshold_k, "q": args.threshold_q, "rate": args.threshold_rate}
    own = POLICY_PARAMS[policy]
    for name, value in given.items():
        if value is None:
            continue
        if own is None or own[0] != name:
            raise ConfigError(f"--threshold-{name} does not apply to threshold policy {policy}")
        params[name] = value
    if own is not None:
        params.setdefault(*own)
    changes: dict[str, Any] = {
        "architecture": args.architecture,
        "encoder": args.encoder,
        "score": args.score,
        "embedding": args.embedding,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "validation_fraction": args.validation_fraction,
        "threshold_policy": policy,
        "threshold_params": params,
    }
    # 0 turns these off (None), which with_overrides would read as "not given".
    if args.patience is not None:
        preset = dataclasses.replace(preset, patience=args.patience or None)
    if args.plateau_patience is not None:
        preset = dataclasses.replace(preset, plateau_patience=args.plateau_patience or None)
    return preset.with_overrides(**changes)


def run(args: argparse.Namespace) -> int:
    from ecg_anomaly.schemas.datasets import load_dataset
    from ecg_anomaly.trainer.evaluation import format_table
    from ecg_anomaly.trainer.preflight import training_extra
    from ecg_anomaly.trainer.train import SplitSettings, train

    training_extra()
    config = config_from_args(args)
    dataset = load_dataset(args.data, args.format)
    result = train(
        config,
        dataset,
        args.out_dir,
        seed=args.seed,
        split=SplitSettings(test_size=args.test_size, random_state=args.split_seed),
        model_version=args.model_version,
        quiet=args.quiet,
        report=not args.no_report,
        verbose=args.verbose,
    )
    print(format_table(result.metrics))
    print(f"artifact: {result.artifact}")
    print(f"sha256:   {result.sha256}")
    print(f"report:   {result.report if result.report is not None else '(none: --no-report)'}")
    return 0
