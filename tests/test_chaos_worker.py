"""Chaos scenarios that hit the worker process: SIGKILL (1), SIGTERM (5), zombie (2), group churn (6).

The ``short`` parametrisations of 1 and 5 run in ``make test``; the full ones
(and 2 and 6) are marked ``chaos`` and run by ``make chaos``. Each prints one
verdict line; see :mod:`tests.support.chaos`.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from tests.support.chaos import ChaosRun
from tests.support.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.kafka

LAG_BOUND = 60.0  # issue 7: lag back to 0 within 60 s of the last restart

# name: (beats, rate, faults, guarantee); "short" is the make-test version
SIGKILL_RUNS = {
    "short": (10_000, 300.0, 5, "exactly-once"),
    "full-eos": (100_000, 700.0, 20, "exactly-once"),
    "full-alo": (100_000, 700.0, 20, "at-least-once"),
}
SIGTERM_RUNS = {"short": (20_000, 300.0, 4), "full": (60_000, 250.0, 20)}


def _chaos_unless_short(runs: dict) -> list:
    """The short run as is (``make test``); the others marked ``chaos``, with room past pytest's 600 s."""
    long_run = (pytest.mark.chaos, pytest.mark.timeout(1800))
    return [pytest.param(k, id=k, marks=() if k == "short" else long_run) for k in runs]


def _busy(run: ChaosRun) -> None:
    """Wait until the current worker consumed something since it started (or the feed is over)."""
    sup = run.supervisors[0]
    wait_for(
        lambda: _consumed(sup.current) > 0 or not run.feeding(),
        180,
        "the worker to consume beats",
        interval=0.1,
    )


def _consumed(worker: WorkerProcess) -> float:
    try:
        return worker.metrics().get("ecg_beats_consumed_total", 0.0)
    except OSError:
        return 0.0


@pytest.mark.parametrize("run_name", _chaos_unless_short(SIGKILL_RUNS))
def test_chaos_1_sigkill(kafka_bootstrap: str, small_model: Path, tmp_path: Path, run_name: str) -> None:
    total, rate, kills, guarantee = SIGKILL_RUNS[run_name]
    run = ChaosRun(kafka_bootstrap, small_model, tmp_path, guarantee)
    sup = run.supervise()
    rng = random.Random()
    try:
        sup.wait_ready()
        run.start_feed(total, rate)
        for _ in range(kills):
            _busy(run)
            time.sleep(rng.uniform(0.0, 3.0))  # a random moment inside a busy stretch
            victim = sup.kill(signal.SIGKILL)
            wait_for(lambda v=victim: sup.current is not v, 60, "the supervisor to restart the worker")
        last_restart = time.monotonic()
        sup.wait_ready()
        run.wait_feed()
        within = run.lag_zero_within(LAG_BOUND + max(0.0, time.monotonic() - last_restart))
        lag_zero_after = time.monotonic() - last_restart if within is not None else None
    finally:
        exits = run.stop_all()
    verdict = run.verdict()
    killed = sum(1 for c in sup.exit_codes if c == -signal.SIGKILL)
    passed = (
        verdict.passed(run.exactly_once)
        and verdict.inputs == total
        and exits == [0]
        and lag_zero_after is not None
    )
    run.report(
        f"1 SIGKILL x{killed}",
        verdict,
        passed,
        restarts=sup.restarts,
        lag_zero_after=lag_zero_after if lag_zero_after is not None else f"over_{LAG_BOUND:.0f}s",
    )
    assert verdict.inputs == total
    assert verdict.missing == [], verdict.missing[:20]
    assert verdict.differing == 0 and verdict.event_mismatch == 0
    if run.exactly_once:
        assert verdict.duplicates == 0
    assert killed >= kills and exits == [0]
    assert lag_zero_after is not None, f"lag not back to 0 within {LAG_BOUND} s of the last restart"


@pytest.mark.parametrize("run_name", _chaos_unless_short(SIGTERM_RUNS))
def test_chaos_5_sigterm(kafka_bootstrap: str, small_model: Path, tmp_path: Path, run_name: str) -> None:
    """SIGTERM under load: each worker drains and exits 0 (past --drain-timeout the watchdog exits 70)."""
    total, rate, terms = SIGTERM_RUNS[run_name]
    run = ChaosRun(kafka_bootstrap, small_model, tmp_path, "at-least-once", drain_timeout=10)
    sup = run.supervise()
    stop_seconds: list[float] = []
    try:
        sup.wait_ready()
        run.start_feed(total, rate)
        for _ in range(terms):
            sup.wait_ready()  # a running worker: a SIGTERM inside interpreter start-up is another case
            _busy(run)
            victim = sup.kill(signal.SIGTERM)
            sent = time.monotonic()
            assert victim.proc is not None
            victim.proc.wait(60)
            stop_seconds.append(time.monotonic() - sent)
            wait_for(lambda v=victim: sup.current is not v, 60, "the supervisor to restart the worker")
        sup.wait_ready()
        run.wait_feed()
        run.wait_lag_zero(LAG_BOUND + 120)
    finally:
        exits = run.stop_all()
    verdict = run.verdict()
    codes = sup.exit_codes + exits
    passed = verdict.passed(exactly_once=True) and set(codes) == {0} and verdict.inputs == total
    run.report(
        f"5 SIGTERM x{len(stop_seconds)}",
        verdict,
        passed,
        exits_nonzero=sum(1 for c in codes if c != 0),
        max_stop=max(stop_seconds),
        restarts=sup.restarts,
    )
    assert set(codes) == {0}, codes
    assert verdict.inputs == total
    assert verdict.missing == [] and verdict.duplicates == 0, (verdict.missing[:20], verdict.duplicates)
