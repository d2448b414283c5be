"""``report.html`` with its PNG plots beside it: losses, reconstructions, error histograms, ROC and PR.

Matplotlib (Agg backend) is imported when a report is written, never at import.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecg_anomaly.trainer.evaluation import curves

# (file name, caption) in page order; tests check that every one is written and linked.
PLOTS: tuple[tuple[str, str], ...] = (
    ("loss.png", "Training and validation loss (mean absolute error) per epoch"),
    (
        "reconstructions.png",
        "A normal and an abnormal test beat, their reconstructions, and the error between",
    ),
    ("error_histogram.png", "Reconstruction error of normal and abnormal test beats, with the threshold"),
    ("roc.png", "ROC curve on the test split (anomaly positive), with the operating point"),
    ("pr.png", "Precision-recall curve on the test split (anomaly positive), with the operating point"),
)


@dataclass(frozen=True)
class ReportInputs:
    history: dict[str, list[float]]  # Keras history: "loss" and, with a validation split, "val_loss"
    normalised: np.ndarray  # test beats after the min-max normalisation [N, L]
    reconstructed: np.ndarray  # the autoencoder's output for them [N, L]
    scores: np.ndarray  # test scores from the ONNX artifact [N]
    is_anomaly: np.ndarray  # bool [N]
    summary: dict[str, Any]  # the metrics.json document


def write_report(out_dir: Path, inputs: ReportInputs) -> Path:
    """Write the PNGs and ``report.html`` into ``out_dir``; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threshold = float(inputs.summary["metrics"]["threshold"])
    drawers = (_loss, _reconstructions, _histogram, _roc, _pr)
    for (name, _), draw in zip(PLOTS, drawers, strict=True):
        fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
        draw(ax, inputs, threshold)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
    path = out_dir / "report.html"
    path.write_text(_html(inputs.summary))
    return path


def _loss(ax: Any, inputs: ReportInputs, threshold: float) -> None:
    epochs = np.arange(1, len(inputs.history["loss"]) + 1)
    ax.plot(epochs, inputs.history["loss"], label="training (normal beats)")
    if "val_loss" in inputs.history:
        ax.plot(epochs, inputs.history["val_loss"], label="validation (held-out training normals)")
    else:
        ax.set_title("no validation split (tutorial preset)", fontsize=9)
    ax.set(xlabel="epoch", ylabel="loss (MAE)", yscale="log")
    ax.legend()


def _reconstructions(ax: Any, inputs: ReportInputs, threshold: float) -> None:
    """The beat nearest the median score of each class, so the picture is typical, not cherry-picked."""
    samples = np.arange(inputs.normalised.shape[1])
    for is_anomaly, colour, label in ((False, "tab:blue", "normal"), (True, "tab:red", "abnormal")):
        members = np.flatnonzero(inputs.is_anomaly == is_anomaly)
        if members.size == 0:
            continue
        scores = inputs.scores[members]
        i = members[np.argmin(np.abs(scores - np.median(scores)))]
        x, r = inputs.normalised[i], inputs.reconstructed[i]
        ax.plot(samples, x, color=colour, label=f"{label} beat (score {inputs.scores[i]:.4f})")
        ax.plot(samples, r, color=colour, linestyle="--", linewidth=1, label=f"{label} reconstruction")
        ax.fill_between(samples, x, r, color=colour, alpha=0.25)
    ax.set(xlabel="sample", ylabel="normalised value", title=f"threshold {threshold:.4f}; shaded = error")
    ax.legend(fontsize=8)


def _histogram(ax: Any, inputs: ReportInputs, threshold: float) -> None:
    bins = np.linspace(0, float(np.quantile(inputs.scores, 0.995)) * 1.05, 60)
    ax.hist(inputs.scores[~inputs.is_anomaly], bins=bins, alpha=0.6, label="normal", color="tab:blue")
    ax.hist(inputs.scores[inputs.is_anomaly], bins=bins, alpha=0.6, label="abnormal", color="tab:red")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4f}")
    ax.set(xlabel="reconstruction error (score); axis ends at the 99.5th percentile", ylabel="test beats")
    ax.legend()


def _operating_point(inputs: ReportInputs, threshold: float) -> tuple[float, float, float]:
    flagged = inputs.scores > threshold
    actual = inputs.is_anomaly
    tpr = float(np.mean(flagged[actual])) if actual.any() else 0.0
    fpr = float(np.mean(flagged[~actual])) if (~actual).any() else 0.0
    precision = float(np.mean(actual[flagged])) if flagged.any() else 1.0
    return fpr, tpr, precision


def _roc(ax: Any, inputs: ReportInputs, threshold: float) -> None:
    c = curves(inputs.scores, inputs.is_anomaly)
    fpr, tpr, _ = _operating_point(inputs, threshold)
    ax.plot(c.fpr, c.tpr, label=f"ROC (AUC {inputs.summary['metrics']['roc_auc']:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.plot([fpr], [tpr], "o", color="black", label=f"threshold: FPR {fpr:.3f}, TPR {tpr:.3f}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(-0.01, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")


def _pr(ax: Any, inputs: ReportInputs, threshold: float) -> None:
    c = curves(inputs.scores, inputs.is_anomaly)
    _, recall, precision = _operating_point(inputs, threshold)
    ax.step(c.recall, c.precision, where="post", label=f"PR (AP {inputs.summary['metrics']['pr_auc']:.4f})")
    ax.plot([recall], [precision], "o", color="black", label=f"threshold: P {precision:.3f}, R {recall:.3f}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01))
    ax.legend(loc="lower left")


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }
figure { margin: 1.5em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr><th>"
        + html.escape(str(row[0]))
        + "</th>"
        + "".join(f"<td>{cell}</td>" for cell in row[1:])
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(summary: dict[str, Any]) -> str:
    m = summary["metrics"]
    version = html.escape(str(summary.get("model_version", "")))
    policy = html.escape(str(summary.get("threshold_policy", "")))
    keys = ("accuracy", "precision", "recall", "f1")
    conventions = (
        ("anomaly positive", "anomaly_positive"),
        ("normal positive (tutorial)", "normal_positive"),
    )
    cm = m["confusion_matrix"]["rows_actual_columns_predicted"]
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>ECG anomaly model {version}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>ECG anomaly model <code>{version}</code></h1>",
        f"<p>Evaluated on the held-out test split ({m['n']} beats, {m['n_anomalies']} abnormal). "
        "The test split was not used for training, early stopping or choosing the threshold. "
        f"Threshold {m['threshold']:.6g} ({policy}); a beat is an anomaly when its score is above it.</p>",
        "<h2>Metrics</h2>",
        _table(["", *keys], [[name, *(f"{m[key][k]:.4f}" for k in keys)] for name, key in conventions]),
        _table(
            ["", "value"],
            [
                ["ROC AUC", f"{m['roc_auc']:.4f}"],
                ["PR AUC (average precision)", f"{m['pr_auc']:.4f}"],
                ["training time", f"{m.get('training_time_s', float('nan')):.1f} s"],
            ],
        ),
        "<h3>Confusion matrix</h3>",
        _table(["actual \\ predicted", "normal", "anomaly"], [["normal", *cm[0]], ["anomaly", *cm[1]]]),
    ]
    if m.get("recall_by_class"):
        rows = [[f"class {k}", v["n"], f"{v['recall']:.3f}"] for k, v in m["recall_by_class"].items()]
        parts += ["<h3>Recall by abnormal ECG5000 class</h3>", _table(["", "beats", "recall"], rows)]
    parts.append("<h2>Plots</h2>")
    for name, caption in PLOTS:
        text = html.escape(caption)
        parts.append(f'<figure><img src="{name}" alt="{text}"><figcaption>{text}</figcaption></figure>')
    details = {k: v for k, v in summary.items() if k != "metrics"}
    parts += [
        "<h2>Training details</h2>",
        f"<pre>{html.escape(json.dumps(details, indent=2, sort_keys=True))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
