"""The episode rule on the replayed ECG5000 stream, measured without a broker: what the defaults rest on.

The stream is what ``ecg-anomaly replay --sources 16 --loop`` sends: the test split's n-th beat
goes to source ``n mod 16``, the data over and over, with each source's beats 0.833 s apart in beat
time (72 a minute, a resting heart). The scores are the worker's own (onnxruntime, the same
artifact), so each beat is flagged exactly as the worker flags it, and the rule is the worker's
:class:`~ecg_anomaly.worker.episodes.store.EpisodeStore`, fed in batches.

Three streams, one hour of beat time each (16 sources):

* ``mixed``: the test split as it is (about 42% abnormal beats, shuffled: no runs), replayed, and
  drawn at random (the replay's fixed cycle never gives a source 10 normal beats in a row);
* ``healthy``: its normal beats only (what the model flags there are false positives), replayed
  the same way, and drawn at random for 12 hours (the replay's short fixed cycle happens never to
  put two false positives of one source close together: drawn, they are independent, as on a
  real feed);
* ``runs``: healthy beats with runs of the split's abnormal beats (3, 5, 10 and 30 beats long,
  one every ~2 minutes per source): how many runs open an episode, and how late.

For each rule: anomaly events, episodes opened and alert records per hour, the share of flagged
beats inside an episode, episodes per source-hour on the healthy stream, and on the runs stream
the share of runs of each length that opened one and the median delay in beats.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from ecg_anomaly.worker.episodes.rules import EpisodeRules
from ecg_anomaly.worker.episodes.store import EpisodeStore
from ecg_anomaly.worker.model import load_model
from tests.support.artifact import load_test_split
from tests.support.episodes import THRESHOLD, Beat, batch

SOURCES = 16
BEAT_MS = 833  # 72 beats a minute per source
HOUR_BEATS = 3_600_000 // BEAT_MS * SOURCES
RUN_LENGTHS = (3, 5, 10, 30)
HEALTHY_HOURS = 12  # the healthy stream drawn at random: rare false episodes need many beats to count
# (k, n, m): the candidates measured
CANDIDATES = [
    (1, 1, 1),
    (2, 3, 3),
    (3, 5, 5),
    (3, 5, 15),
    (4, 8, 10),
    (4, 8, 15),
    (5, 10, 5),
    (5, 10, 10),
    (5, 10, 15),
    (5, 10, 20),
    (6, 12, 15),
]


def _stream(flags: np.ndarray, ratios: np.ndarray, total: int) -> list[Beat]:
    """Beat i of the looped data to source i mod 16, every source one beat per BEAT_MS."""
    out = []
    n = len(flags)
    for i in range(total):
        j = i % n
        source = i % SOURCES
        # the score handed to the store: above THRESHOLD exactly when the model flags the beat
        out.append(
            Beat(0, i, f"patient-{source:03d}", (i // SOURCES) * BEAT_MS, float(ratios[j]) * THRESHOLD)
        )
    return out


def _runs_stream(normal: np.ndarray, abnormal: np.ndarray, total: int, seed: int = 3) -> tuple[list, list]:
    """Healthy beats with runs of abnormal ones; returns the stream's (flag, ratio) pairs per source
    position and the runs as (source, first index in that source's beats, length)."""
    rng = np.random.default_rng(seed)
    per_source = total // SOURCES
    plan: list[list[float]] = []
    runs = []
    for s in range(SOURCES):
        beats: list[float] = []
        while len(beats) < per_source:
            gap = int(rng.integers(100, 200))
            beats += [float(normal[rng.integers(len(normal))]) for _ in range(gap)]
            length = int(rng.choice(RUN_LENGTHS))
            runs.append((s, len(beats), length))
            beats += [float(abnormal[rng.integers(len(abnormal))]) for _ in range(length)]
        plan.append(beats[:per_source])
    runs = [r for r in runs if r[1] + r[2] <= per_source]
    stream = [
        Beat(0, i * SOURCES + s, f"patient-{s:03d}", i * BEAT_MS, plan[s][i] * THRESHOLD)
        for i in range(per_source)
        for s in range(SOURCES)
    ]
    return stream, runs


def _episodes(rules: EpisodeRules, beats: list[Beat]) -> tuple[dict[str, int], list[dict[str, Any]]]:
    store = EpisodeStore(rules, "alerts")
    counts = {"opened": 0, "updated": 0, "recovered": 0, "silent": 0}
    alerts: list[dict[str, Any]] = []
    for lo in range(0, len(beats), 1024):
        decoded, flags, score, after = batch(beats[lo : lo + 1024])
        step = store.step(decoded, flags, score, THRESHOLD, after, "bench")
        for k, v in step.counts.items():
            counts[k] += v
        alerts += [json.loads(r.value) for r in step.alerts]
    return counts, alerts


def _covered(alerts: list[dict[str, Any]], beats: list[Beat]) -> float:
    """Share of flagged beats inside an episode (its first beat to its last, as its last record says)."""
    last: dict[str, dict[str, Any]] = {a["episode_id"]: a for a in alerts}
    spans: dict[str, list[tuple[int, int]]] = {}
    for a in last.values():
        spans.setdefault(a["source_id"], []).append((_ms(a["first_beat_time"]), _ms(a["last_beat_time"])))
    flagged = [b for b in beats if b.anomalous]
    inside = sum(1 for b in flagged if any(f <= b.ms <= t for f, t in spans.get(b.source, ())))
    return inside / max(len(flagged), 1)


def measure(model_path: Path, update_s: float = 60.0, silence_s: float = 30.0) -> dict[str, Any]:
    model = load_model(model_path)
    values, labels = load_test_split()
    ratios = model.score(values.astype(np.float32)).score.astype(np.float64) / model.threshold
    flags = ratios > 1
    mixed = _stream(flags, ratios, HOUR_BEATS)
    healthy = _stream(flags[labels == 0], ratios[labels == 0], HOUR_BEATS)
    rng = np.random.default_rng(5)
    drawn = rng.choice(ratios[labels == 0], HEALTHY_HOURS * HOUR_BEATS)  # no fixed cycle
    healthy_drawn = _stream(drawn > 1, drawn, HEALTHY_HOURS * HOUR_BEATS)
    drawn = rng.choice(ratios, HOUR_BEATS)
    mixed_drawn = _stream(drawn > 1, drawn, HOUR_BEATS)
    runs_stream, runs = _runs_stream(ratios[labels == 0], ratios[labels == 1], HOUR_BEATS)
    out: dict[str, Any] = {
        "sources": SOURCES,
        "beat_ms": BEAT_MS,
        "beats_per_hour": HOUR_BEATS,
        "flagged_share_mixed": round(float(flags.mean()), 3),
        "flagged_share_healthy": round(float(flags[labels == 0].mean()), 4),
        "recall_abnormal": round(float(flags[labels == 1].mean()), 4),
        "events_per_hour_mixed": sum(b.anomalous for b in mixed),
        "events_per_hour_healthy": sum(b.anomalous for b in healthy),
        "rules": [],
    }
    for k, n, m in CANDIDATES:
        rules = EpisodeRules(k, n, m, round(silence_s * 1000), round(update_s * 1000))
        counts, alerts = _episodes(rules, mixed)
        durations = [
            (_ms(a["last_beat_time"]) - _ms(a["first_beat_time"])) / 1000
            for a in alerts
            if a["kind"] == "closed"
        ]
        healthy_counts, _ = _episodes(rules, healthy)
        drawn_counts, _ = _episodes(rules, healthy_drawn)
        mixed_drawn_counts, drawn_alerts = _episodes(rules, mixed_drawn)
        run_counts, run_alerts = _episodes(rules, runs_stream)
        detected = _detected(run_alerts, runs)
        out["rules"].append(
            {
                "k": k,
                "n": n,
                "m": m,
                "mixed_episodes_per_hour": counts["opened"],
                "mixed_alerts_per_hour": counts["opened"]
                + counts["updated"]
                + counts["recovered"]
                + counts["silent"],
                "mixed_flagged_inside": round(_covered(alerts, mixed), 3),
                "mixed_median_episode_s": round(statistics.median(durations), 1) if durations else None,
                "mixed_drawn_episodes_per_hour": mixed_drawn_counts["opened"],
                "mixed_drawn_flagged_inside": round(_covered(drawn_alerts, mixed_drawn), 3),
                "healthy_episodes_per_source_hour": round(healthy_counts["opened"] / SOURCES, 3),
                "healthy_drawn_episodes_per_source_hour": round(
                    drawn_counts["opened"] / SOURCES / HEALTHY_HOURS, 4
                ),
                "runs_opened": detected,
                "runs_false_episodes_per_source_hour": round(
                    (run_counts["opened"] - sum(d["opened"] for d in detected.values())) / SOURCES, 3
                ),
            }
        )
    return out


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _detected(alerts: list[dict[str, Any]], runs: list[tuple[int, int, int]]) -> dict[str, dict[str, Any]]:
    """Per run length: the runs whose beats opened an episode, and the median delay in beats."""
    opened = {
        (int(a["source_id"][-3:]), a["opened_by"]["offset"] // SOURCES)
        for a in alerts
        if a["kind"] == "opened"
    }
    out: dict[str, dict[str, Any]] = {}
    for length in RUN_LENGTHS:
        mine = [r for r in runs if r[2] == length]
        delays = []
        for s, first, n in mine:
            hits = [i - first + 1 for src, i in opened if src == s and first <= i < first + n]
            if hits:
                delays.append(min(hits))
        out[str(length)] = {
            "runs": len(mine),
            "opened": len(delays),
            "share": round(len(delays) / max(len(mine), 1), 3),
            "median_delay_beats": statistics.median(delays) if delays else None,
        }
    return out


def table(result: dict[str, Any]) -> str:
    r0 = result
    lines = [
        f"{r0['sources']} sources, a beat every {r0['beat_ms']} ms each; per hour {r0['beats_per_hour']:,} "
        f"beats; flagged: mixed {r0['flagged_share_mixed']:.1%}, healthy {r0['flagged_share_healthy']:.2%}; "
        f"anomaly events per hour: mixed {r0['events_per_hour_mixed']:,}, "
        f"healthy {r0['events_per_hour_healthy']:,}",
        "",
        "| k of n, m | mixed: episodes/h | alert records/h | flagged beats inside | median episode (s) "
        "| mixed drawn at random: episodes/h (flagged inside) "
        "| healthy: episodes per source-hour, replayed / drawn at random "
        "| runs of 3/5/10/30 that opened one (median delay, beats) "
        "| runs stream: other episodes per source-hour |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rules"]:
        runs = " / ".join(
            f"{d['share']:.0%} ({d['median_delay_beats'] if d['median_delay_beats'] is not None else '-'})"
            for d in r["runs_opened"].values()
        )
        cells = [
            f"{r['k']} of {r['n']}, {r['m']}",
            f"{r['mixed_episodes_per_hour']:,}",
            f"{r['mixed_alerts_per_hour']:,}",
            f"{r['mixed_flagged_inside']:.1%}",
            str(r["mixed_median_episode_s"] or "open all hour"),
            f"{r['mixed_drawn_episodes_per_hour']:,} ({r['mixed_drawn_flagged_inside']:.1%})",
            f"{r['healthy_episodes_per_source_hour']} / {r['healthy_drawn_episodes_per_source_hour']}",
            runs,
            str(r["runs_false_episodes_per_source_hour"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    args = parser.parse_args()
    result = measure(args.model)
    print(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
