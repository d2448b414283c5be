"""The demo's numbers from a metrics scrape, and the fault kinds against the worker's decoder (no broker)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import generate_latest

from ecg_anomaly.schemas.messages import DEAD_LETTER_REASONS, DeadLetterReason
from ecg_anomaly.tools.faults import FAULT_KINDS, FaultInjector, bad_record
from ecg_anomaly.tools.live_stats import (
    Snapshot,
    beats_per_second,
    final_lines,
    histogram_quantile,
    live_line,
    parse_snapshot,
    window,
)
from ecg_anomaly.worker.decode import BeatDecoder
from ecg_anomaly.worker.metrics import WorkerMetrics, observe_many
from ecg_anomaly.worker.records import Record, Records

INF = math.inf


def test_histogram_quantile_matches_promql() -> None:
    buckets = ((0.1, 50.0), (0.25, 90.0), (0.5, 100.0), (INF, 100.0))
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.25 + 0.25 * 9 / 10)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.2, buckets) == pytest.approx(0.04)
    # Rank in the +Inf bucket: the largest finite bound; no observations: no answer.
    assert histogram_quantile(0.99, ((0.1, 10.0), (INF, 20.0))) == 0.1
    assert histogram_quantile(0.99, ((0.1, 0.0), (INF, 0.0))) is None
    assert histogram_quantile(0.99, ()) is None


def test_window_keeps_only_the_observations_between_two_scrapes() -> None:
    before = ((0.1, 50.0), (0.5, 60.0), (INF, 60.0))
    after = ((0.1, 50.0), (0.5, 160.0), (INF, 160.0))
    assert window(after, before) == ((0.1, 0.0), (0.5, 100.0), (INF, 100.0))
    assert histogram_quantile(0.5, window(after, before)) == pytest.approx(0.3)


def _scrape_of_a_worker() -> str:
    """A real exposition from the worker's own metrics code, with known counts."""
    metrics = WorkerMetrics()
    metrics.consumed.inc(1010)
    metrics.scored.labels("normal").inc(570)
    metrics.scored.labels("anomaly").inc(430)
    metrics.dead_letters.labels("invalid_json").inc(6)
    metrics.dead_letters.labels("missing_key").inc(4)
    for label, outcome, count in (
        ("normal", "normal", 560),
        ("normal", "anomaly", 10),
        ("anomaly", "anomaly", 420),
        ("anomaly", "normal", 10),
    ):
        metrics.labelled.labels(label, outcome).inc(count)
    observe_many(metrics.latency, np.array([0.02] * 980 + [0.3] * 20))
    metrics.set_partitions([0, 1])
    metrics.set_lag(1, 7)
    metrics.set_episodes(3, 5, 900)
    for kind, count in (("opened", 7), ("updated", 20), ("closed", 4)):
        metrics.episode_transitions.labels(kind).inc(count)
    metrics.episodes_closed.labels("recovered").inc(3)
    metrics.episodes_closed.labels("silent").inc(1)
    return generate_latest(metrics.registry).decode()


def test_snapshot_of_a_real_exposition() -> None:
    snapshot = parse_snapshot(_scrape_of_a_worker(), at=10.0)
    assert (snapshot.consumed, snapshot.normal, snapshot.anomalies) == (1010, 570, 430)
    assert snapshot.dead_letter_total == 10 and snapshot.outcomes == 1010
    assert set(snapshot.dead_letters) == set(DEAD_LETTER_REASONS)  # pre-initialised, zeros included
    assert snapshot.precision_recall() == pytest.approx((420 / 430, 420 / 430))
    # 99 % of 1000 observations: the 990th is in the (0.25, 0.5] bucket holding the 20 slow ones.
    assert histogram_quantile(0.99, snapshot.latency) == pytest.approx(0.25 + 0.25 * 10 / 20)
    # the 500th is in the (0.015, 0.02] bucket holding the 980 fast ones
    assert histogram_quantile(0.5, snapshot.latency) == pytest.approx(0.015 + 0.005 * 500 / 980)
    assert snapshot.lag == 7


def test_live_and_final_lines() -> None:
    start = Snapshot(at=0.0)
    current = parse_snapshot(_scrape_of_a_worker(), at=5.0)
    assert beats_per_second(current, start) == pytest.approx(202)
    line = live_line(current, start, elapsed=5.0)
    assert "202 beats/s" in line and "anomalies 430" in line and "dead letters 10" in line
    assert "precision 0.977 recall 0.977" in line and "p99 latency 375 ms" in line and "lag 7" in line
    text = "\n".join(final_lines(current, start))
    assert "invalid_json 6, missing_key 4" in text and "oversized" not in text
    assert "true positives 420, false positives 10, false negatives 10, true negatives 560" in text
    assert "p99 375 ms" in text
    assert "episodes" not in line and "episodes" not in text  # a worker without --episodes has them at 0


def test_live_and_final_lines_with_episodes() -> None:
    start = Snapshot(at=0.0)
    current = parse_snapshot(_scrape_of_a_worker(), at=5.0)
    assert (current.episodes.open, current.episodes.records["updated"]) == (3, 20)
    line = live_line(current, start, elapsed=5.0, episodes=True)
    assert line.endswith("| lag 7 | episodes open 3 (opened 7, closed 4: recovered 3, silent 1)")
    text = "\n".join(final_lines(current, start, episodes=True))
    assert (
        "alert episodes open 3 (opened 7, closed 4: recovered 3, silent 1); 31 alert records "
        "(opened 7, updated 20, closed 4) for 430 anomaly events"
    ) in text
    assert "episodes open 0 (opened 0, closed 0)" in live_line(Snapshot(at=1.0), start, 1.0, episodes=True)


def test_no_labels_means_no_precision_rather_than_zero() -> None:
    assert Snapshot(at=0.0).precision_recall() == (None, None)
    assert "precision n/a recall n/a" in live_line(Snapshot(at=1.0), Snapshot(at=0.0), 1.0)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_is_dead_lettered_with_its_reason_by_the_worker_decoder(kind: str) -> None:
    values = np.linspace(-1, 1, 140, dtype=np.float32)
    bad = bad_record(DeadLetterReason(kind), "patient-001", values)
    record = Record("ecg.beats", 0, 1, 1_700_000_000_000, bad.key, bad.value, bad.headers)
    batch = BeatDecoder(140, 65536, 1024).decode(Records.of([record]))
    assert not batch.rows
    assert [r.reason.value for r in batch.rejects] == [kind]


def test_fault_kinds_cover_every_dead_letter_reason_and_repeat_with_the_seed() -> None:
    assert set(FAULT_KINDS) == set(DEAD_LETTER_REASONS) - {"output_too_large"}  # needs a small output topic
    values = np.zeros(140, dtype=np.float32)

    def sequence(seed: int) -> list[str | None]:
        injector = FaultInjector(0.3, seed=seed)
        out = [injector.after_beat("s", values) for _ in range(200)]
        return [None if bad is None else bad.reason.value for bad in out]

    assert sequence(4) == sequence(4) != sequence(5)
    assert 30 < sum(kind is not None for kind in sequence(4)) < 90
    assert FaultInjector(0.0).after_beat("s", values) is None
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultInjector(0.1, kinds=("no_such_reason",))
