"""20,000 beats through the worker over a secured cluster, each guarantee, each way of authenticating.

The worker principal has exactly the least-privilege ACLs of :func:`ecg_anomaly.base.acls.worker_acls`
(and nothing for IDEMPOTENT_WRITE); the outputs are read back by kafka-python with ``read_committed``
over the SASL_SSL listener. Both guarantees run side by side on one input topic, in their own groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from ecg_anomaly.base.acls import worker_acls
from tests.support.artifact import load_test_split
from tests.support.secure import SecuredKafka
from tests.support.worker import WorkerProcess, produce_beats, read_topic, wait_for

pytestmark = pytest.mark.kafka

BEATS = 20_000
PARTITIONS = 3


def start_worker(
    secured: SecuredKafka,
    topics: Callable[..., str],
    group: str,
    beats_topic: str,
    model: Path,
    log: Path,
    guarantee: str,
    flags: dict[str, str],
) -> tuple[WorkerProcess, dict[str, str]]:
    outputs = {
        "anomaly_topic": topics(partitions=PARTITIONS, prefix="anomalies"),
        "scores_topic": topics(partitions=PARTITIONS, prefix="scores"),
        "dlq_topic": topics(partitions=1, prefix="dlq"),
    }
    secured.grant(worker_acls(beats_topic, *outputs.values(), group, guarantee == "exactly-once"))
    worker = WorkerProcess(
        flags["bootstrap_servers"],
        model,
        beats_topic,
        group,
        log,
        guarantee=guarantee,
        **{k: v for k, v in flags.items() if k != "bootstrap_servers"},
        **outputs,
    )
    return worker.start(), outputs


@pytest.mark.parametrize("auth", ["scram", "mtls"])
def test_20000_beats_at_least_once_and_exactly_once_over_a_secured_listener(
    auth: str,
    secured_kafka: SecuredKafka,
    secure_topic_factory: Callable[..., str],
    group_factory: Callable[..., str],
    small_model: Path,
    tmp_path: Path,
) -> None:
    beats, _ = load_test_split()
    feed = np.resize(beats, (BEATS, beats.shape[1]))
    beats_topic = secure_topic_factory(partitions=PARTITIONS, prefix="beats")
    produce_beats(secured_kafka.admin_bootstrap, beats_topic, feed, binary=True, sources=50)
    flags = secured_kafka.scram_flags() if auth == "scram" else secured_kafka.mtls_flags()

    runs = {}
    for guarantee in ("at-least-once", "exactly-once"):
        group = group_factory(f"worker-{auth}")
        log = tmp_path / f"{guarantee}.log"
        worker, outputs = start_worker(
            secured_kafka, secure_topic_factory, group, beats_topic, small_model, log, guarantee, flags
        )
        runs[guarantee] = (worker, outputs, group)
    try:
        for guarantee, (worker, _, group) in runs.items():
            wait_for(
                lambda w=worker, g=group: (
                    sum(secured_kafka.committed(g).values()) >= BEATS or w.proc.poll() is not None
                ),
                240,
                f"{guarantee} over {auth}: {BEATS:,} offsets committed",
                interval=0.5,
            )
            assert worker.proc.poll() is None, worker.log()
            assert sum(secured_kafka.committed(group).values()) == BEATS
    finally:
        for worker, _, _ in runs.values():
            worker.stop()

    reader = secured_kafka.kafka_python()
    for guarantee, (worker, outputs, _) in runs.items():
        assert worker.wait() == 0, worker.log()
        scores = read_topic("", outputs["scores_topic"], committed_only=True, **reader)
        anomalies = read_topic("", outputs["anomaly_topic"], committed_only=True, **reader)
        assert read_topic("", outputs["dlq_topic"], committed_only=True, **reader) == []
        values = [orjson.loads(r.value) for r in scores]
        inputs = Counter((v["input"]["partition"], v["input"]["offset"]) for v in values)
        assert len(inputs) == BEATS, f"{guarantee}: {BEATS - len(inputs)} input offsets have no score"
        flagged = {v["event_id"] for v in values if v["anomaly"]}
        assert {orjson.loads(r.value)["event_id"] for r in anomalies} == flagged
        if guarantee == "exactly-once":
            assert max(inputs.values()) == 1, f"exactly-once over {auth}: an input offset scored twice"
            assert len(anomalies) == len(flagged)
        secret = (
            secured_kafka.password("ecg-worker")
            if auth == "scram"
            else secured_kafka.file("ecg-worker.key-password").read_text().strip()
        )
        assert secret not in worker.log_path.read_text()
