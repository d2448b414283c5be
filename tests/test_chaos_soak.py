"""Chaos scenario 10, the soak: 30 minutes at 2,000 beats/s against one worker (``make chaos`` only).

Pass: resident memory at the end within 10% of its value after warm-up, no
processing error and no restart, p99 end-to-end latency of the last window
no worse than twice the first post-warm-up window's, every beat accounted for.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from tests.support.chaos import ChaosRun
from tests.support.worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.chaos]

SOAK_SECONDS, RATE, WARM_UP, WINDOW = 1800.0, 2000.0, 300.0, 300.0
LATENCY = "ecg_end_to_end_latency_seconds_bucket"


def _rss_bytes(worker: WorkerProcess) -> int:
    assert worker.proc is not None
    for line in Path(f"/proc/{worker.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _buckets(metrics: dict[str, float]) -> dict[float, float]:
    """Cumulative latency histogram: upper bound → count."""
    out = {}
    for key, value in metrics.items():
        if key.startswith(LATENCY + "{"):
            le = key.split('le="', 1)[1].split('"', 1)[0]
            out[math.inf if le == "+Inf" else float(le)] = value
    return out


def _p99(first: dict[float, float], last: dict[float, float]) -> float:
    """The 99th percentile's bucket bound between two cumulative snapshots."""
    delta = {le: last[le] - first.get(le, 0.0) for le in sorted(last)}
    total = delta[math.inf]
    if not total:
        return math.nan
    return next(le for le, count in delta.items() if count >= 0.99 * total)


@pytest.mark.timeout(int(SOAK_SECONDS) + 900)
def test_chaos_10_soak(kafka_bootstrap: str, small_model: Path, tmp_path: Path) -> None:
    total = int(SOAK_SECONDS * RATE)
    run = ChaosRun(kafka_bootstrap, small_model, tmp_path, "at-least-once", max_batch=500)
    sup = run.supervise()
    p99s: list[float] = []
    try:
        worker = sup.current
        worker.wait_ready()
        run.start_feed(total, RATE, bad_every=0)
        time.sleep(WARM_UP)
        rss_warm = _rss_bytes(worker)
        snapshot = _buckets(worker.metrics())
        while run.feeding():
            time.sleep(min(WINDOW, SOAK_SECONDS))
            now = _buckets(worker.metrics())
            p99s.append(_p99(snapshot, now))
            snapshot = now
        rss_end = _rss_bytes(worker)
        errors = sum(v for k, v in worker.metrics().items() if k.startswith("ecg_processing_errors_total"))
        run.wait_feed()
        run.wait_lag_zero(300)
    finally:
        exits = run.stop_all()
    verdict = run.verdict()
    growth = rss_end / rss_warm - 1
    stable = p99s[-1] <= 2 * p99s[0]
    passed = (
        verdict.passed(False)
        and growth < 0.10
        and errors == 0
        and sup.restarts == 0
        and stable
        and exits == [0]
    )
    run.report(
        f"10 soak {SOAK_SECONDS / 60:.0f}min {RATE:.0f}/s",
        verdict,
        passed,
        rss_warm_mb=f"{rss_warm / 2**20:.0f}",
        rss_end_mb=f"{rss_end / 2**20:.0f}",
        rss_growth=f"{growth:+.1%}",
        errors=int(errors),
        restarts=sup.restarts,
        p99_per_5min="/".join(f"{p:g}" for p in p99s),
    )
    assert verdict.missing == [] and verdict.differing == 0 and verdict.inputs == total
    assert growth < 0.10 and errors == 0 and sup.restarts == 0 and exits == [0]
    assert stable, p99s
