"""The demo's live numbers, computed from the worker's own ``/metrics`` (never from the demo's side).

A :class:`Snapshot` is one scrape reduced to what the summary shows. Between two
snapshots: beats/s (consumed), and the p99 end-to-end latency of the beats
scored in that window; for one snapshot: totals, dead letters by reason,
precision/recall of the "anomaly" outcome against the labels the beats
carried (``ecg_labelled_beats_total``), and the alert episodes (open now, opened,
closed by reason), shown when the worker runs with ``--episodes`` (the metrics
are there either way, at 0). The quantile is estimated from the
histogram buckets exactly as PromQL's ``histogram_quantile`` does, so the
demo and a Grafana panel agree.
"""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Buckets = tuple[tuple[float, float], ...]  # (upper bound "le", cumulative count), ending with +Inf


@dataclass(frozen=True)
class Episodes:
    """The worker's alert episodes (``ecg_episode*``): open now, and records written so far."""

    open: float = 0.0
    records: dict[str, float] = field(default_factory=dict)  # kind (opened/updated/closed) → alert records
    closed: dict[str, float] = field(default_factory=dict)  # reason (recovered/silent) → episodes

    def line(self) -> str:
        reasons = ", ".join(f"{r} {n:,.0f}" for r, n in sorted(self.closed.items()) if n)
        return (
            f"episodes open {self.open:,.0f} (opened {self.records.get('opened', 0):,.0f}, "
            f"closed {sum(self.closed.values()):,.0f}" + (f": {reasons}" if reasons else "") + ")"
        )


@dataclass(frozen=True)
class Snapshot:
    at: float  # when it was scraped (monotonic seconds)
    consumed: float = 0.0
    normal: float = 0.0
    anomalies: float = 0.0
    dead_letters: dict[str, float] = field(default_factory=dict)  # reason → count
    confusion: dict[tuple[str, str], float] = field(default_factory=dict)  # (label, outcome) → count
    latency: Buckets = ()
    lag: float = 0.0
    episodes: Episodes = field(default_factory=Episodes)

    @property
    def dead_letter_total(self) -> float:
        return sum(self.dead_letters.values())

    @property
    def outcomes(self) -> float:
        """Consumed records that reached an outcome (scored or dead-lettered)."""
        return self.normal + self.anomalies + self.dead_letter_total

    def precision_recall(self) -> tuple[float | None, float | None]:
        """Of the labelled beats: anomaly-flagged that were abnormal, and abnormal that were flagged."""
        tp = self.confusion.get(("anomaly", "anomaly"), 0.0)
        fp = self.confusion.get(("normal", "anomaly"), 0.0)
        fn = self.confusion.get(("anomaly", "normal"), 0.0)
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        return precision, recall


def parse_snapshot(text: str, at: float) -> Snapshot:
    """Reduce a Prometheus text exposition of the worker's metrics to a :class:`Snapshot`."""
    values: dict[str, float] = {}
    dead: dict[str, float] = {}
    confusion: dict[tuple[str, str], float] = {}
    latency: list[tuple[float, float]] = []
    lag = 0.0
    episodes_open = 0.0
    records: dict[str, float] = {}
    closed: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "ecg_beats_consumed_total":
                values["consumed"] = value
            elif name == "ecg_beats_scored_total":
                values[labels["outcome"]] = value
            elif name == "ecg_dead_letters_total":
                dead[labels["reason"]] = value
            elif name == "ecg_labelled_beats_total":
                confusion[(labels["label"], labels["outcome"])] = value
            elif name == "ecg_end_to_end_latency_seconds_bucket":
                latency.append((float(labels["le"]), value))
            elif name == "ecg_consumer_lag":
                lag += value
            elif name == "ecg_episodes_open":
                episodes_open = value
            elif name == "ecg_episode_transitions_total":
                records[labels["kind"]] = value
            elif name == "ecg_episodes_closed_total":
                closed[labels["reason"]] = value
    return Snapshot(
        at=at,
        consumed=values.get("consumed", 0.0),
        normal=values.get("normal", 0.0),
        anomalies=values.get("anomaly", 0.0),
        dead_letters=dead,
        confusion=confusion,
        latency=tuple(sorted(latency)),
        lag=lag,
        episodes=Episodes(episodes_open, records, closed),
    )


def scrape(url: str, at: float, timeout: float = 5.0) -> Snapshot:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_snapshot(response.read().decode(), at)


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """PromQL's estimate: linear interpolation inside the bucket holding rank ``q * count``.

    None when there are no observations. If the rank falls in the +Inf bucket the
    answer is the largest finite bound (the true value is somewhere above it).
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def window(current: Buckets, previous: Buckets) -> Buckets:
    """The bucket counts of the observations made between two scrapes."""
    if not previous:
        return current
    before = dict(previous)
    return tuple((bound, count - before.get(bound, 0.0)) for bound, count in current)


def beats_per_second(current: Snapshot, previous: Snapshot) -> float:
    seconds = current.at - previous.at
    return (current.consumed - previous.consumed) / seconds if seconds > 0 else 0.0


def anomaly_rate(current: Snapshot, previous: Snapshot) -> float | None:
    """The share of the beats scored between two snapshots that were anomalies; None if none were."""
    scored = current.normal + current.anomalies - previous.normal - previous.anomalies
    return (current.anomalies - previous.anomalies) / scored if scored > 0 else None


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:,.0f} ms"


def live_line(current: Snapshot, previous: Snapshot, elapsed: float, episodes: bool = False) -> str:
    """One line for the running demo: the window's rate and p99, the run's totals and quality (and
    with ``episodes``, the alert episodes)."""
    precision, recall = current.precision_recall()
    p99 = histogram_quantile(0.99, window(current.latency, previous.latency))
    return (
        f"[{elapsed:4.0f} s] {beats_per_second(current, previous):6,.0f} beats/s | "
        f"scored {current.normal + current.anomalies:,.0f} | anomalies {current.anomalies:,.0f} | "
        f"dead letters {current.dead_letter_total:,.0f} | precision {_ratio(precision)} "
        f"recall {_ratio(recall)} | p99 latency {_ms(p99)} | lag {current.lag:,.0f}"
        + (f" | {current.episodes.line()}" if episodes else "")
    )


def final_lines(snapshot: Snapshot, first: Snapshot, episodes: bool = False) -> list[str]:
    """The run's totals: outcomes, dead letters by reason, confusion, precision/recall, p99 latency."""
    precision, recall = snapshot.precision_recall()
    seconds = snapshot.at - first.at
    c = snapshot.confusion
    reasons = ", ".join(f"{r} {n:,.0f}" for r, n in sorted(snapshot.dead_letters.items()) if n)
    lines = [
        f"worker consumed {snapshot.consumed:,.0f} records in {seconds:.0f} s: "
        f"{snapshot.normal:,.0f} normal, {snapshot.anomalies:,.0f} anomalies, "
        f"{snapshot.dead_letter_total:,.0f} dead letters" + (f" ({reasons})" if reasons else ""),
        f"against the labels: precision {_ratio(precision)}, recall {_ratio(recall)} "
        f"(true positives {c.get(('anomaly', 'anomaly'), 0):,.0f}, "
        f"false positives {c.get(('normal', 'anomaly'), 0):,.0f}, "
        f"false negatives {c.get(('anomaly', 'normal'), 0):,.0f}, "
        f"true negatives {c.get(('normal', 'normal'), 0):,.0f})",
        f"end-to-end latency p99 {_ms(histogram_quantile(0.99, snapshot.latency))}, "
        f"p50 {_ms(histogram_quantile(0.5, snapshot.latency))} "
        "(record timestamp to outputs acknowledged; estimated from the histogram buckets)",
    ]
    if episodes:
        e = snapshot.episodes
        kinds = ", ".join(f"{k} {e.records.get(k, 0):,.0f}" for k in ("opened", "updated", "closed"))
        lines.append(
            f"alert {e.line()}; {sum(e.records.values()):,.0f} alert records ({kinds}) "
            f"for {snapshot.anomalies:,.0f} anomaly events"
        )
    return lines
