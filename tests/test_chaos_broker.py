"""Chaos scenarios that hit the broker: SIGSTOP pauses (4) and SIGKILL restarts (3).

Each test runs its own :class:`LocalBroker` (own port and data directory), so
the session broker other tests use is never touched. The worker runs under a
:class:`Supervisor` (restart on exit, kill on failed liveness), as in a pod.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import LocalBroker
from tests.support.chaos import ChaosRun
from tests.support.worker import wait_for

pytestmark = pytest.mark.kafka

RECOVERY_BOUND = 240.0  # seconds for the group to commit everything after the last fault

# name: (beats, rate, pauses in seconds)
PAUSE_RUNS = {"short": (6_000, 200.0, (10.0,)), "full": (40_000, 150.0, (10.0, 40.0, 90.0))}
KILLS, DOWN = 5, 30.0  # scenario 3


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    with LocalBroker() as broker:
        yield broker


def _chaos_unless_short(runs: dict) -> list:
    """The short run as is (``make test``); the others marked ``chaos``, with room past pytest's 600 s."""
    long_run = (pytest.mark.chaos, pytest.mark.timeout(1800))
    return [pytest.param(k, id=k, marks=() if k == "short" else long_run) for k in runs]


@pytest.mark.parametrize("run_name", _chaos_unless_short(PAUSE_RUNS))
def test_chaos_4_broker_paused(
    own_broker: LocalBroker, small_model: Path, tmp_path: Path, run_name: str
) -> None:
    """No call hangs forever: the worker recovers by itself or liveness fails and a restart recovers."""
    total, rate, pauses = PAUSE_RUNS[run_name]
    run = ChaosRun(own_broker.bootstrap, small_model, tmp_path, "exactly-once")
    sup = run.supervise()
    try:
        sup.wait_ready()
        run.start_feed(total, rate)
        for seconds in pauses:
            time.sleep(5)
            own_broker.pause()
            time.sleep(seconds)
            own_broker.resume()
            wait_for(
                lambda: sup.current.status("/readyz") == 200, RECOVERY_BOUND, "readiness after the pause"
            )
        run.wait_feed()
        recovered = run.wait_lag_zero(RECOVERY_BOUND)
    finally:
        exits = run.stop_all()
    verdict = run.verdict()
    passed = verdict.passed(run.exactly_once) and verdict.inputs == total and exits == [0]
    run.report(
        "4 broker SIGSTOP " + "/".join(f"{p:.0f}s" for p in pauses),
        verdict,
        passed,
        restarts=sup.restarts,
        liveness_kills=sup.liveness_kills,
        exit_codes=",".join(map(str, sup.exit_codes)) or "-",
        lag_zero_after_feed=recovered,
    )
    assert verdict.inputs == total
    assert verdict.missing == [] and verdict.duplicates == 0, (verdict.missing[:20], verdict.duplicates)
    assert exits == [0]


@pytest.mark.chaos
@pytest.mark.timeout(1800)
def test_chaos_3_broker_killed(own_broker: LocalBroker, small_model: Path, tmp_path: Path) -> None:
    """SIGKILL the broker 5 times, 30 s down each: readiness drops and returns, nothing is lost."""
    run = ChaosRun(own_broker.bootstrap, small_model, tmp_path, "exactly-once")
    sup = run.supervise()
    readiness_dropped = 0
    try:
        sup.wait_ready()
        run.start_feed(30_000, 150.0)
        for _ in range(KILLS):
            time.sleep(5)
            own_broker.kill()
            down = time.monotonic()
            wait_for(lambda: sup.current.status("/readyz") != 200, DOWN, "readiness to drop")
            readiness_dropped += 1
            time.sleep(max(0.0, DOWN - (time.monotonic() - down)))
            own_broker.start()
            wait_for(lambda: sup.current.status("/readyz") == 200, RECOVERY_BOUND, "readiness to return")
        run.wait_feed()
        recovered = run.wait_lag_zero(RECOVERY_BOUND)
    finally:
        exits = run.stop_all()
    verdict = run.verdict()
    passed = verdict.passed(run.exactly_once) and verdict.inputs == 30_000 and exits == [0]
    run.report(
        f"3 broker SIGKILL x{KILLS} {DOWN:.0f}s down",
        verdict,
        passed,
        readiness_dropped=readiness_dropped,
        restarts=sup.restarts,
        exit_codes=",".join(map(str, sup.exit_codes)) or "-",
        lag_zero_after_feed=recovered,
    )
    assert verdict.inputs == 30_000
    assert verdict.missing == [] and verdict.duplicates == 0, (verdict.missing[:20], verdict.duplicates)
    assert exits == [0]
