"""Chaos scenarios with several workers in one group: a zombie (2) and membership churn (6).

Both are full-length only (marked ``chaos``); each prints one verdict line.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from tests.support.chaos import ChaosRun
from tests.support.chaos_checker import LagWatch
from tests.support.supervisor import Supervisor
from tests.support.worker import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.chaos]

CHURN_SECONDS, CHURN_EVERY, CHURN_RATE = 600.0, 15.0, 300.0  # scenario 6
STALL_BOUND = 60.0


@pytest.mark.timeout(900)
def test_chaos_2_zombie(kafka_bootstrap: str, small_model: Path, tmp_path: Path) -> None:
    """SIGSTOP worker A past the session timeout, B takes over, SIGCONT A: A is fenced or aborts."""
    run = ChaosRun(kafka_bootstrap, small_model, tmp_path, "exactly-once")
    a, b = run.supervise("a"), run.supervise("b")
    try:
        a.wait_ready()
        b.wait_ready()
        run.start_feed(20_000, 500.0)
        wait_for(lambda: _owns(b) and _owns(a), 120, "both workers to own partitions")
        time.sleep(5)
        zombie = a.kill(signal.SIGSTOP)
        wait_for(lambda: _owns_all(b, 6), 120, "B to take over every partition")
        time.sleep(5)  # B commits A's former partitions
        zombie.signal(signal.SIGCONT)
        run.wait_feed()
        recovered = run.wait_lag_zero(240)
    finally:
        exits = run.stop_all()
    verdict = run.verdict()
    passed = verdict.passed(True) and verdict.inputs == 20_000 and exits == [0, 0]
    run.report(
        "2 zombie SIGSTOP/SIGCONT",
        verdict,
        passed,
        zombie_exit_codes=",".join(map(str, a.exit_codes)) or "none",
        zombie_log_fenced=int(_fenced(zombie.log_path)),
        lag_zero_after_feed=recovered,
    )
    assert verdict.missing == [] and verdict.duplicates == 0, (verdict.missing[:20], verdict.duplicates)
    assert verdict.inputs == 20_000 and exits == [0, 0]


def _owned(sup: Supervisor) -> float:
    try:
        return sum(1 for k in sup.current.metrics() if k.startswith("ecg_consumer_lag{"))
    except OSError:
        return 0.0


def _owns(sup: Supervisor) -> bool:
    return _owned(sup) > 0


def _owns_all(sup: Supervisor, partitions: int) -> bool:
    return _owned(sup) >= partitions


def _fenced(log: Path) -> bool:
    text = log.read_text(errors="replace")
    return any(s in text for s in ("fenced", "transaction failed", "CommitFailed", "IllegalGeneration"))


@pytest.mark.timeout(1500)
def test_chaos_6_group_churn(kafka_bootstrap: str, small_model: Path, tmp_path: Path) -> None:
    """Two to three workers over 6 partitions; one added or removed every 15 s for 10 minutes."""
    run = ChaosRun(kafka_bootstrap, small_model, tmp_path, "exactly-once")
    total = int(CHURN_SECONDS * CHURN_RATE)
    names = iter(f"w{i}" for i in range(1000))
    live = [run.supervise(next(names)), run.supervise(next(names))]
    rng = random.Random()
    changes = 0
    watch = LagWatch(kafka_bootstrap, run.group, run.topics["input"])
    try:
        for sup in live:
            sup.wait_ready()
        run.start_feed(total, CHURN_RATE)
        end = time.monotonic() + CHURN_SECONDS
        while time.monotonic() < end:
            time.sleep(CHURN_EVERY)
            if len(live) == 2:  # alternate 2 → 3 → 2 workers; which one leaves is random
                live.append(run.supervise(next(names)))
            else:
                gone = live.pop(rng.randrange(len(live)))
                assert gone.stop() == 0, gone.current.log()
            changes += 1
        run.wait_feed()
        recovered = run.wait_lag_zero(240)
    finally:
        watch.stop()
        exits = [s.stop() for s in live]
    verdict = run.verdict()
    restarts = sum(s.restarts for s in run.supervisors)
    passed = (
        verdict.passed(True)
        and verdict.inputs == total
        and set(exits) == {0}
        and watch.longest_stall <= STALL_BOUND
    )
    run.report(
        f"6 group churn x{changes} over {CHURN_SECONDS:.0f}s",
        verdict,
        passed,
        longest_partition_stall=watch.longest_stall,
        restarts=restarts,
        lag_zero_after_feed=recovered,
    )
    assert verdict.missing == [] and verdict.duplicates == 0, (verdict.missing[:20], verdict.duplicates)
    assert verdict.inputs == total and set(exits) == {0}
    assert watch.longest_stall <= STALL_BOUND, watch.stalled_partition
