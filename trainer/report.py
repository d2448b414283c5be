"""``report.html``: one self-contained page (its plots embedded as PNG data URIs) about one trained artifact.

What a reader needs to trust or distrust the model: the artifact's sha256 and library versions,
the test metrics (undefined ones as "n/a"), the threshold with its uncertainty and what the ends
of that interval would do on the test split, the losses with the kept epoch marked, the score
distributions, ROC and PR with the operating point, and the beats the model gets most confidently
wrong, drawn against their reconstructions. Matplotlib (Agg backend) is imported when a report is
written, never at import.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecg_anomaly.trainer.evaluation import curves, number
from ecg_anomaly.trainer.export import Scored

# (id, caption) in page order; tests check that every one is embedded.
PLOTS: tuple[tuple[str, str], ...] = (
    ("loss", "Training and validation loss per epoch; the dot marks the epoch whose weights were kept"),
    (
        "reconstructions",
        "A typical normal and abnormal test beat (median score of its class) and reconstruction",
    ),
    ("score_histogram", "Score of normal and abnormal test beats, with the threshold and its 90 % interval"),
    ("roc", "ROC curve on the test split (anomaly positive), with the operating point"),
    ("pr", "Precision-recall curve on the test split (anomaly positive), with the operating point"),
    ("misclassified", "The most confidently misclassified test beats, against their reconstructions"),
)
WORST = 3  # misclassified beats drawn per kind (missed anomalies, false alarms)
BEAT_AXIS = "sample (beat resampled to a fixed length)"
VALUE_AXIS = "normalised amplitude (training min 0, max 1)"
SCORE_AXIS = {
    "mae_normalised": "score: mean absolute error (normalised units)",
    "rmse_latent_knn": "score: RMS error fused with code distance (normalised units)",
}


@dataclass(frozen=True)
class ReportInputs:
    history: dict[str, list[float]]  # Keras history: "loss" and, with a validation split, "val_loss"
    best_epoch: int  # 1-based
    scored: Scored  # the Keras reference on the test split: normalised beats, reconstructions, errors
    onnx_scores: np.ndarray  # the artifact's test scores [N] (what the metrics are computed from)
    is_anomaly: np.ndarray  # bool [N]
    classes: np.ndarray | None  # int [N] when the data had classes
    summary: dict[str, Any]  # the metrics.json document (with sha256)
    library_versions: dict[str, str]


def write_report(path: Path, inputs: ReportInputs) -> Path:
    """Write the self-contained ``report.html`` to ``path``; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threshold = float(inputs.summary["metrics"]["threshold"])
    drawers = (_loss, _reconstructions, _histogram, _roc, _pr, _misclassified)
    images = {}
    for (name, _), draw in zip(PLOTS, drawers, strict=True):
        size = (11, 5.5) if name == "misclassified" else (7.5, 4.2)
        fig = plt.figure(figsize=size, dpi=100)
        draw(fig, inputs, threshold)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        images[name] = base64.b64encode(buffer.getvalue()).decode("ascii")
    path.write_text(_html(inputs, images))
    return path


def _loss(fig: Any, inputs: ReportInputs, threshold: float) -> None:
    ax = fig.add_subplot()
    epochs = np.arange(1, len(inputs.history["loss"]) + 1)
    ax.plot(epochs, inputs.history["loss"], label="training (normal beats)")
    watched = inputs.history.get("val_loss", inputs.history["loss"])
    if "val_loss" in inputs.history:
        ax.plot(epochs, watched, label="validation (held-out training normals)")
    else:
        ax.set_title("no validation split (tutorial preset): the last epoch is kept", fontsize=9)
    best = inputs.best_epoch
    ax.plot([best], [watched[best - 1]], "o", color="black", label=f"kept: epoch {best}")
    ax.set(xlabel="epoch", ylabel="loss: mean absolute error (normalised units)", yscale="log")
    ax.legend()


def _beat(ax: Any, inputs: ReportInputs, i: int, colour: str, label: str) -> None:
    samples = np.arange(inputs.scored.normalised.shape[1])
    x, r = inputs.scored.normalised[i], inputs.scored.reconstruction[i]
    ax.plot(samples, x, color=colour, label=label)
    ax.plot(samples, r, color=colour, linestyle="--", linewidth=1, label="reconstruction")
    ax.fill_between(samples, x, r, color=colour, alpha=0.25)


def _reconstructions(fig: Any, inputs: ReportInputs, threshold: float) -> None:
    """The beat nearest the median score of each class, so the picture is typical, not cherry-picked."""
    ax = fig.add_subplot()
    for is_anomaly, colour, name in ((False, "tab:blue", "normal"), (True, "tab:red", "abnormal")):
        members = np.flatnonzero(inputs.is_anomaly == is_anomaly)
        if members.size == 0:
            continue
        scores = inputs.onnx_scores[members]
        i = int(members[np.argmin(np.abs(scores - np.median(scores)))])
        _beat(ax, inputs, i, colour, f"{name} beat (score {inputs.onnx_scores[i]:.4g})")
    ax.set(xlabel=BEAT_AXIS, ylabel=VALUE_AXIS, title=f"threshold {threshold:.4g}; shaded: the error")
    ax.legend(fontsize=8)


def _interval(inputs: ReportInputs) -> tuple[float, float] | None:
    uncertainty = inputs.summary.get("threshold_uncertainty")
    return None if uncertainty is None else tuple(uncertainty["interval_90"])  # type: ignore[return-value]


def _histogram(fig: Any, inputs: ReportInputs, threshold: float) -> None:
    ax = fig.add_subplot()
    scores = inputs.onnx_scores
    bins = np.geomspace(max(float(scores.min()), 1e-6), float(scores.max()) * 1.01, 70)
    ax.hist(scores[~inputs.is_anomaly], bins=bins, alpha=0.6, label="normal", color="tab:blue")
    ax.hist(scores[inputs.is_anomaly], bins=bins, alpha=0.6, label="abnormal", color="tab:red")
    interval = _interval(inputs)
    if interval is not None:
        ax.axvspan(*interval, color="grey", alpha=0.25, label="threshold's 90 % interval")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    unit = SCORE_AXIS.get(str(inputs.summary.get("score")), "score")
    ax.set(xscale="log", xlabel=f"{unit}, log scale", ylabel="test beats")
    ax.legend(fontsize=8)


def _operating_point(inputs: ReportInputs, threshold: float) -> tuple[float, float, float]:
    flagged = inputs.onnx_scores > threshold
    actual = inputs.is_anomaly
    tpr = float(np.mean(flagged[actual])) if actual.any() else 0.0
    fpr = float(np.mean(flagged[~actual])) if (~actual).any() else 0.0
    precision = float(np.mean(actual[flagged])) if flagged.any() else 1.0
    return fpr, tpr, precision


def _roc(fig: Any, inputs: ReportInputs, threshold: float) -> None:
    ax = fig.add_subplot()
    c = curves(inputs.onnx_scores, inputs.is_anomaly)
    fpr, tpr, _ = _operating_point(inputs, threshold)
    ax.plot(c.fpr, c.tpr, label=f"ROC (AUC {number(inputs.summary['metrics']['roc_auc'])})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.plot([fpr], [tpr], "o", color="black", label=f"threshold: FPR {fpr:.3f}, TPR {tpr:.3f}")
    ax.set(
        xlabel="false positive rate (share of normal beats flagged)",
        ylabel="true positive rate (share of abnormal beats flagged)",
        xlim=(-0.01, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")


def _pr(fig: Any, inputs: ReportInputs, threshold: float) -> None:
    ax = fig.add_subplot()
    c = curves(inputs.onnx_scores, inputs.is_anomaly)
    _, recall, precision = _operating_point(inputs, threshold)
    ax.step(
        c.recall, c.precision, where="post", label=f"PR (AP {number(inputs.summary['metrics']['pr_auc'])})"
    )
    ax.plot([recall], [precision], "o", color="black", label=f"threshold: P {precision:.3f}, R {recall:.3f}")
    ax.set(
        xlabel="recall (share of abnormal beats flagged)",
        ylabel="precision (share of flagged beats abnormal)",
        xlim=(0, 1.01),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower left")


def worst_misclassified(
    scores: np.ndarray, is_anomaly: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Indices of the missed anomalies with the lowest scores and the false alarms with the highest."""
    missed = np.flatnonzero(is_anomaly & (scores <= threshold))
    false_alarms = np.flatnonzero(~is_anomaly & (scores > threshold))
    return {
        "missed": missed[np.argsort(scores[missed], kind="stable")][:WORST],
        "false_alarm": false_alarms[np.argsort(-scores[false_alarms], kind="stable")][:WORST],
    }


def _misclassified(fig: Any, inputs: ReportInputs, threshold: float) -> None:
    worst = worst_misclassified(inputs.onnx_scores, inputs.is_anomaly, threshold)
    axes = fig.subplots(2, WORST, sharex=True, sharey=True, squeeze=False)
    for row, (kind, colour, title) in enumerate(
        (("missed", "tab:red", "missed anomaly"), ("false_alarm", "tab:blue", "false alarm"))
    ):
        for col in range(WORST):
            ax = axes[row][col]
            if col >= worst[kind].size:
                ax.text(0.5, 0.5, f"no {'more ' if col else ''}{title}s", ha="center", va="center")
                ax.set_axis_off()
                continue
            i = int(worst[kind][col])
            klass = "" if inputs.classes is None else f", class {int(inputs.classes[i])}"
            _beat(ax, inputs, i, colour, "beat")
            ax.set_title(
                f"{title}{klass}: score {inputs.onnx_scores[i]:.3g} = "
                f"{inputs.onnx_scores[i] / threshold:.2f} x threshold",
                fontsize=8,
            )
            if col == 0:
                ax.set_ylabel(VALUE_AXIS, fontsize=7)
            if row == 1:
                ax.set_xlabel(BEAT_AXIS, fontsize=7)
    axes[0][0].legend(fontsize=7)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }
figure { margin: 1.5em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
code { word-break: break-all; }
"""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr><th>"
        + html.escape(str(row[0]))
        + "</th>"
        + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row[1:])
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _threshold_section(inputs: ReportInputs, threshold: float) -> list[str]:
    summary = inputs.summary
    policy = html.escape(str(summary.get("threshold_policy", "")))
    source = html.escape(str(summary.get("threshold_params", {}).get("errors_from", "")))
    parts = [
        "<h2>Threshold</h2>",
        f"<p>{threshold:.6g} ({policy}, from {source} scores of the training split). "
        "A beat is an anomaly when its score is above it.</p>",
    ]
    interval = _interval(inputs)
    if interval is None:
        return parts
    std = summary["threshold_uncertainty"]["std"]
    rows = []
    for name, value in (
        ("interval low", interval[0]),
        ("threshold", threshold),
        ("interval high", interval[1]),
    ):
        flagged = inputs.onnx_scores > value
        actual = inputs.is_anomaly
        recall = float(np.mean(flagged[actual])) if actual.any() else None
        false_alarms = float(np.mean(flagged[~actual])) if (~actual).any() else None
        rows.append([name, f"{value:.6g}", number(recall), number(false_alarms)])
    parts += [
        f"<p>Uncertainty ({html.escape(summary['threshold_uncertainty']['method'])}): standard deviation "
        f"{std:.3g}, central 90 % interval [{interval[0]:.6g}, {interval[1]:.6g}]. What the interval's ends "
        "would do on the test split:</p>",
        _table(["", "value", "recall (anomaly)", "false-alarm rate"], rows),
    ]
    return parts


def _html(inputs: ReportInputs, images: dict[str, str]) -> str:
    summary = inputs.summary
    m = summary["metrics"]
    threshold = float(m["threshold"])
    version = html.escape(str(summary.get("model_version", "")))
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
        f"<p>Artifact <code>model.onnx</code>, sha256 <code>{html.escape(str(summary['sha256']))}</code>. "
        f"Evaluated on the held-out test split ({m['n']} beats, {m['n_anomalies']} abnormal), which was not "
        "used for training, early stopping, calibrating the score or choosing the threshold. "
        "“n/a”: the test split cannot define that metric (e.g. ROC AUC on one class).</p>",
        "<h2>Metrics</h2>",
        _table(["", *keys], [[name, *(number(m[key][k]) for k in keys)] for name, key in conventions]),
        _table(
            ["", "value"],
            [
                ["ROC AUC", number(m["roc_auc"])],
                ["PR AUC (average precision)", number(m["pr_auc"])],
                ["training time (fit)", f"{m.get('training_time_s', float('nan')):.1f} s"],
            ],
        ),
        "<h3>Confusion matrix</h3>",
        _table(["actual \\ predicted", "normal", "anomaly"], [["normal", *cm[0]], ["anomaly", *cm[1]]]),
    ]
    if m.get("recall_by_class"):
        rows = [[f"class {k}", v["n"], number(v["recall"], 3)] for k, v in m["recall_by_class"].items()]
        parts += ["<h3>Recall by abnormal ECG5000 class</h3>", _table(["", "beats", "recall"], rows)]
    parts += _threshold_section(inputs, threshold)
    parts.append("<h2>Plots</h2>")
    for name, caption in PLOTS:
        text = html.escape(caption)
        parts.append(
            f'<figure id="{name}"><img src="data:image/png;base64,{images[name]}" alt="{text}">'
            f"<figcaption>{text}</figcaption></figure>"
        )
    details = {k: v for k, v in summary.items() if k != "metrics"}
    parts += [
        "<h2>Library versions</h2>",
        _table(["library", "version"], [[k, v] for k, v in sorted(inputs.library_versions.items())]),
        "<h2>Training details</h2>",
        f"<pre>{html.escape(json.dumps(details, indent=2, sort_keys=True))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
