"""A Deployment's rolling update at full scale (replicas = input partitions), on the real broker.

``deploy/k8s/base/deployment.yaml`` rolls with ``maxSurge: 1, maxUnavailable: 0``: the controller
starts one pod of the new ReplicaSet, waits until it is ready, stops one old pod, and repeats. KEDA
caps the replicas at the partition count, so a rollout under load starts with one worker per
partition and its surge pod joins a group with nothing left to give it. Here the workers run as a
Deployment's pods would: one group, client id = pod name (``ECG_CLIENT_ID`` from
``metadata.name``), dynamic membership, beats flowing throughout.

The pod names are chosen so that the new ReplicaSet's hash sorts after the old one's: member ids
begin with the client id, the (default, range) assignor orders members by id and leaves the last one
idle, so the surge pod gets nothing. That is the order in which about half of real rollouts met a
readiness that required a partition and stalled until ``progressDeadlineSeconds``; in the other
order an old pod is left idle, and the controller stops a pod that is not ready first.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.chaos import ChaosRun
from tests.support.chaos_checker import feed, group_done
from tests.support.worker import WorkerProcess, wait_for

pytestmark = pytest.mark.kafka

PARTITIONS = 3
RATE = 150.0  # beats/s throughout the rollout
READY_TIMEOUT = 60.0  # far above a worker's start (about 2 s); a Deployment would wait 600 s
MIN_READY = 3.0  # the Deployment's minReadySeconds (10 s), shortened: the pod must stay ready
OLD, NEW = "ecg-worker-6c9f7d8b5", "ecg-worker-7f4d9c6b8"  # ReplicaSet hashes: NEW sorts last


@dataclass
class Pod:
    name: str
    worker: WorkerProcess

    def ready(self) -> bool:
        return self.worker.status("/readyz") == 200

    def readyz(self) -> str:
        """/readyz's body: why the worker is or is not ready."""
        try:
            with urllib.request.urlopen(self.worker.url("/readyz"), timeout=2) as response:
                return response.read().decode().strip()
        except urllib.error.HTTPError as exc:
            return exc.read().decode().strip()
        except OSError as exc:
            return f"(no answer: {exc})"

    def wait_ready(self, role: str) -> float:
        try:
            return self.worker.wait_ready(READY_TIMEOUT)
        except AssertionError:
            raise AssertionError(
                f"{role} {self.name} not ready after {READY_TIMEOUT:g} s: a Deployment's rollout stalls "
                f"here until progressDeadlineSeconds. /readyz: {self.readyz()!r}"
            ) from None

    def partitions(self) -> float:
        return self.worker.metrics().get("ecg_assigned_partitions", 0.0)


class ReplicaSets:
    """Workers started and stopped as pods of a Deployment's ReplicaSets, in one consumer group."""

    def __init__(self, run: ChaosRun, log_dir: Path) -> None:
        self.run, self.log_dir = run, log_dir
        self.pods: list[Pod] = []

    def start(self, name: str) -> Pod:
        options = {**self.run.options, "client_id": name, "transactional_id": f"{self.run.group}-{name}"}
        log = self.log_dir / f"{name}.log"
        worker = WorkerProcess(
            self.run.bootstrap, self.run.model, self.run.topics["input"], self.run.group, log, **options
        )
        pod = Pod(name, worker.start())
        self.pods.append(pod)
        return pod

    def stop_all(self) -> None:
        for pod in self.pods:
            pod.worker.stop()


def next_to_stop(old: list[Pod]) -> Pod:
    """As the ReplicaSet controller ranks pods to delete: a not-ready one first, else the youngest."""
    not_ready = [p for p in old if not p.ready()]
    return not_ready[0] if not_ready else old[-1]


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_a_rollout_at_full_scale_completes_and_loses_no_beat(
    kafka_bootstrap: str, small_model: Path, tmp_path: Path, guarantee: str
) -> None:
    run = ChaosRun(kafka_bootstrap, small_model, tmp_path, guarantee, partitions=PARTITIONS)
    sets = ReplicaSets(run, tmp_path)
    stop_feed = threading.Event()
    sent: list[int] = []
    topic = run.topics["input"]
    feeder = threading.Thread(
        target=lambda: sent.append(feed(kafka_bootstrap, topic, 10**9, RATE, 0, stop=stop_feed.is_set)),
        daemon=True,
    )
    steps: list[tuple[float, float]] = []
    try:
        old = [sets.start(f"{OLD}-{suffix}") for suffix in ("a1b2c", "d3e4f", "g5h6i")]
        for pod in old:
            pod.wait_ready("old pod")
        feeder.start()
        time.sleep(2)  # beats flowing through the full-scale group
        for suffix in ("j7k8l", "m9n0p", "q1r2s"):
            began = time.monotonic()
            new = sets.start(f"{NEW}-{suffix}")
            ready_after = new.wait_ready("surge pod")
            time.sleep(MIN_READY)
            assert new.ready(), f"{new.name} did not stay ready: {new.readyz()!r}"
            gone = next_to_stop(old)
            old.remove(gone)
            gone.worker.stop()
            assert gone.worker.wait(1) == 0, gone.worker.log()
            steps.append((ready_after, time.monotonic() - began))
        new_pods = sets.pods[PARTITIONS:]
        for pod in new_pods:
            pod.wait_ready("new pod")
        wait_for(
            lambda: sum(p.partitions() for p in new_pods) == PARTITIONS,
            60,
            "the new pods to own every partition",
        )
        time.sleep(2)
        stop_feed.set()
        feeder.join(60)
        run.total = sent[0]
        wait_for(group_done(kafka_bootstrap, run.group, topic, run.total), 120, "every beat committed")
    finally:
        stop_feed.set()
        sets.stop_all()
    verdict = run.verdict()
    print(
        f"\nrollout {guarantee}: {PARTITIONS} partitions, {run.total} beats; per step (ready s, step s): "
        + ", ".join(f"({r:.1f}, {s:.1f})" for r, s in steps)
        + f"; {verdict.counts()}"
    )
    assert verdict.inputs == run.total and not verdict.missing, verdict.counts()
    assert verdict.passed(guarantee == "exactly-once"), verdict.counts()
