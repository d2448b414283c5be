"""Model quality: a preset against the classical reference detectors, on the same training split.

Two suites, three seeds each:

* ``tutorial``: the tutorial's split (``test_size=0.2, random_state=21``): 4,000 training beats, the same
  1,000 test beats for every seed; the seed changes the model's initialisation and the validation part.
* ``small``: a random 10 % of ECG5000 (``test_size=0.9, random_state=seed``): 500 training beats (about
  290 normal), evaluated on the other 4,500.

Each run trains the preset through :func:`ecg_anomaly.trainer.train.train` (the code path of
``ecg-anomaly train``) and fits every classical detector of :mod:`tests.benchmarks.classical` on the
same training split; every row is scored on the same test beats. The test split trains, stops and
calibrates nothing. Results go to ``bench-results/model-quality-<suite>.json`` and a Markdown table.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from ecg_anomaly.schemas.datasets import Dataset, split_train_test
from ecg_anomaly.trainer.presets import PRESETS
from ecg_anomaly.trainer.splits import SplitSettings
from ecg_anomaly.trainer.train import train
from tests.benchmarks.classical import fit_references

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench-results"
SEEDS = (1, 2, 3)
SUITES = {"tutorial": "the tutorial's split", "small": "10 % training subsets"}


def split_for(suite: str, seed: int) -> SplitSettings:
    return SplitSettings(0.2, 21) if suite == "tutorial" else SplitSettings(0.9, seed)


@dataclass(frozen=True)
class Row:
    """One detector on one run's test beats."""

    name: str
    roc_auc: float
    pr_auc: float
    cv_roc_auc: float | None  # classical rows: the cross-validated score that chose their parameters
    fit_seconds: float
    labelled: bool = False  # classical rows: learnt from the training split's abnormal beats too


@dataclass(frozen=True)
class Run:
    suite: str
    seed: int
    preset: str
    n_train: int
    n_test: int
    model: Row
    metrics: dict[str, Any]  # the trained artifact's test metrics (metrics.json)
    threshold: float
    threshold_interval: list[float] | None
    train_seconds: float  # the whole train() call: checks, fit, calibration, export, evaluation
    references: list[Row]


def run(dataset: Dataset, suite: str, seed: int, preset: str = "default") -> Run:
    split = split_for(suite, seed)
    training, test = split_train_test(dataset, split.test_size, split.random_state)
    with tempfile.TemporaryDirectory(prefix="ecg-model-quality-") as out:
        started = time.perf_counter()
        result = train(PRESETS[preset], dataset, Path(out), seed=seed, split=split, quiet=True, report=False)
        seconds = time.perf_counter() - started
        document = json.loads((Path(out) / "metrics.json").read_text())
    metrics = result.metrics
    model = Row(preset, metrics["roc_auc"], metrics["pr_auc"], None, metrics["training_time_s"])
    references = [
        Row(r.label, _auc(test, r.scores), _ap(test, r.scores), r.cv_roc_auc, r.fit_seconds, r.labelled)
        for r in fit_references(training.beats, training.is_anomaly, test.beats, seed)
    ]
    uncertainty = document.get("threshold_uncertainty")
    return Run(
        suite,
        seed,
        preset,
        len(training),
        len(test),
        model,
        metrics,
        result.threshold.value,
        None if uncertainty is None else uncertainty["interval_90"],
        seconds,
        references,
    )


def _auc(test: Dataset, scores: np.ndarray) -> float:
    return float(roc_auc_score(test.is_anomaly, scores))


def _ap(test: Dataset, scores: np.ndarray) -> float:
    return float(average_precision_score(test.is_anomaly, scores))


def recall_spread(runs: list[Run]) -> dict[str, float]:
    """Max minus min over the runs of the anomaly recall, overall and per abnormal class."""
    spreads = {"all": _spread([r.metrics["anomaly_positive"]["recall"] for r in runs])}
    for klass in runs[0].metrics.get("recall_by_class", {}):
        spreads[f"class {klass}"] = _spread([r.metrics["recall_by_class"][klass]["recall"] for r in runs])
    return spreads


def _spread(values: list[float]) -> float:
    return float(max(values) - min(values))


def write(runs: list[Run], suite: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"model-quality-{suite}.json"
    document = {"suite": suite, "runs": [asdict(r) for r in runs], "recall_spread": recall_spread(runs)}
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    path.with_suffix(".md").write_text(markdown(runs, suite))
    return path


def runs_from(document: dict[str, Any]) -> list[Run]:
    """The runs of a document :func:`write` wrote (the docs site renders kept ones)."""
    return [
        Run(**{**r, "model": Row(**r["model"]), "references": [Row(**x) for x in r["references"]]})
        for r in document["runs"]
    ]


def markdown(runs: list[Run], suite: str) -> str:
    """The tables of docs/model-quality.md for one suite."""
    seeds = [r.seed for r in runs]
    head = "| | " + " | ".join(f"seed {s}" for s in seeds) + " |\n|---|" + "---|" * len(seeds) + "\n"

    def line(name: str, cells: list[str]) -> str:
        return f"| {name} | " + " | ".join(cells) + " |\n"

    first = runs[0]
    text = f"### {SUITES[suite]}: {first.n_train} training beats, {first.n_test} test beats\n\n"
    text += head + line(f"**{first.preset}** ROC AUC", [f"**{r.model.roc_auc:.4f}**" for r in runs])
    for i, ref in enumerate(first.references):
        text += line(f"{_ref_name(ref)} ROC AUC", [_ref_cell(r.references[i]) for r in runs])
    text += line(f"{first.preset} PR AUC", [f"{r.model.pr_auc:.4f}" for r in runs])
    for i, ref in enumerate(first.references):
        text += line(f"{_ref_name(ref)} PR AUC", [f"{r.references[i].pr_auc:.4f}" for r in runs])
    ap = [r.metrics["anomaly_positive"] for r in runs]
    text += line("accuracy", [f"{m['accuracy']:.4f}" for m in ap])
    text += line("precision / recall (anomaly)", [f"{m['precision']:.4f} / {m['recall']:.4f}" for m in ap])
    for klass, entry in first.metrics.get("recall_by_class", {}).items():
        text += line(
            f"recall, class {klass} (n={entry['n']})",
            [f"{r.metrics['recall_by_class'][klass]['recall']:.3f}" for r in runs],
        )
    text += line(
        "threshold [90 % interval]",
        [
            f"{r.threshold:.4g}"
            + ("" if r.threshold_interval is None else " [{:.4g}, {:.4g}]".format(*r.threshold_interval))
            for r in runs
        ],
    )
    text += line(
        "fit / whole train() (s)",
        [f"{r.metrics['training_time_s']:.1f} / {r.train_seconds:.1f}" for r in runs],
    )
    spread = recall_spread(runs)
    text += "\nRecall spread across seeds (max - min): " + ", ".join(
        f"{k} {v:.3f}" for k, v in spread.items()
    )
    if any(ref.labelled for ref in first.references):
        text += (
            "\n\n\\* learns from the training split's abnormal beats too, as the default's known-abnormal "
            "factor does; the other classical rows learn from its normal beats only."
        )
    return text + "\n"


def _ref_name(row: Row) -> str:
    return row.name.split(" (")[0] + (" \\*" if row.labelled else "")


def _ref_cell(row: Row) -> str:
    return f"{row.roc_auc:.4f} ({row.name.split(' (')[1].rstrip(')')})"
