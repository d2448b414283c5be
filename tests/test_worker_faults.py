"""Fault injection against a real broker: SIGKILL during a stream (both guarantees), broker outage."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from tests.support.artifact import build_small_artifact, load_test_split
from tests.support.broker import LocalBroker
from tests.support.chaos_checker import check, feed, group_done
from tests.support.worker import WorkerProcess, produce_beats, wait_for

pytestmark = pytest.mark.kafka

TOTAL = 20_000
KILLS = 3
BAD_EVERY = 997  # every 997th record is malformed, so dead letters are part of the outcome count


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_artifact(tmp_path_factory.mktemp("model"))


def _run_with_kills(
    bootstrap: str, model: Path, topic_factory: Callable[..., str], group: str, tmp_path: Path, guarantee: str
) -> dict[str, str]:
    topics = {
        "anomaly_topic": topic_factory(partitions=3, prefix="anomalies"),
        "scores_topic": topic_factory(partitions=3, prefix="scores"),
        "dlq_topic": topic_factory(partitions=1, prefix="dlq"),
    }
    topic = topic_factory(partitions=3, prefix="beats")
    options = dict(
        topics,
        guarantee=guarantee,
        group_instance_id=f"{group}-0",  # static membership: a restarted worker takes its place at once
        transactional_id=f"{group}-tx",
        session_timeout_ms=6000,
        max_batch=200,
    )

    def worker(n: int) -> WorkerProcess:
        return WorkerProcess(
            bootstrap, model, topic, group, tmp_path / f"{guarantee}-{n}.log", **options
        ).start()

    feeder = threading.Thread(target=feed, args=(bootstrap, topic, TOTAL, 4000.0, BAD_EVERY))
    current = worker(0)
    current.wait_ready()
    feeder.start()
    try:
        for n in range(KILLS):
            wait_for(
                lambda w=current: w.metrics()["ecg_beats_consumed_total"] >= 1500,
                120,
                f"worker {n} to process 1,500 beats",
                interval=0.05,
            )
            current.signal(signal.SIGKILL)
            assert current.wait(30) == -signal.SIGKILL
            current = worker(n + 1)
            current.wait_ready()
        feeder.join()
        wait_for(
            group_done(bootstrap, group, topic, TOTAL), 180, "every input offset committed", interval=1.0
        )
        current.signal(signal.SIGTERM)
        assert current.wait(30) == 0, current.log()
    finally:
        current.stop()
        feeder.join()
    return {"input": topic, **topics}


def test_exactly_once_survives_sigkills(
    kafka_bootstrap: str, model_path: Path, topic_factory, group_factory, tmp_path: Path
) -> None:
    topics = _run_with_kills(
        kafka_bootstrap, model_path, topic_factory, group_factory("eos"), tmp_path, "exactly-once"
    )
    verdict = check(kafka_bootstrap, topics, committed_only=True)
    assert verdict.inputs == TOTAL
    assert verdict.missing == []  # no loss
    assert verdict.duplicates == 0
    assert verdict.dead_lettered == len(range(0, TOTAL, BAD_EVERY))
    assert verdict.event_mismatch == 0  # one anomaly event per anomalous score, same event id


def test_at_least_once_survives_sigkills_with_stable_event_ids(
    kafka_bootstrap: str, model_path: Path, topic_factory, group_factory, tmp_path: Path
) -> None:
    topics = _run_with_kills(
        kafka_bootstrap, model_path, topic_factory, group_factory("alo"), tmp_path, "at-least-once"
    )
    verdict = check(kafka_bootstrap, topics, committed_only=False)
    assert verdict.inputs == TOTAL
    assert verdict.missing == []  # no loss
    assert verdict.differing == 0  # a duplicate is the same outcome with the same id
    assert verdict.event_mismatch == 0


def test_readyz_follows_the_broker(model_path: Path, tmp_path: Path) -> None:
    with LocalBroker() as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(t, 1, 1) for t in ("beats", "scores", "anomalies", "dlq")])
        admin.close()
        worker = WorkerProcess(
            broker.bootstrap,
            model_path,
            "beats",
            "ready-group",
            tmp_path / "ready.log",
            scores_topic="scores",
            anomaly_topic="anomalies",
            dlq_topic="dlq",
            broker_timeout=300,
        ).start()
        try:
            worker.wait_ready()
            broker.stop()
            wait_for(lambda: worker.status("/readyz") == 503, 180, "/readyz to fail while the broker is down")
            assert worker.status("/healthz") == 200  # alive: the loop still turns
            wait_for(lambda: worker.metrics()["ecg_worker_ready"] == 0, 180, "the ready gauge to drop")
            broker.start()
            wait_for(lambda: worker.status("/readyz") == 200, 180, "/readyz to recover with the broker")
            beats, _ = load_test_split()
            produce_beats(broker.bootstrap, "beats", beats[:10])
            wait_for(
                lambda: worker.metrics()["ecg_beats_consumed_total"] >= 10, 180, "beats after the outage"
            )
        finally:
            worker.stop()
        assert worker.proc is not None and worker.proc.returncode == 0, worker.log()


def test_fenced_exactly_once_worker_exits_so_the_pod_restarts(
    kafka_bootstrap: str, model_path: Path, topic_factory, group_factory, tmp_path: Path
) -> None:
    topic = topic_factory(partitions=2, prefix="beats")
    group = group_factory("fence")
    options = {
        "guarantee": "exactly-once",
        "transactional_id": f"{group}-same",  # a misconfigured second replica reuses the id
        "anomaly_topic": topic_factory(prefix="anomalies"),
        "dlq_topic": topic_factory(prefix="dlq"),
    }
    first = WorkerProcess(
        kafka_bootstrap, model_path, topic, group, tmp_path / "first.log", **options
    ).start()
    second = WorkerProcess(kafka_bootstrap, model_path, topic, group, tmp_path / "second.log", **options)
    beats, _ = load_test_split()
    try:
        first.wait_ready()
        second.start().wait_ready()  # its init_transactions fences the first producer
        produce_beats(kafka_bootstrap, topic, beats[:200], sources=20)  # both partitions get beats
        assert first.wait(timeout=180) == 3, first.log()
        assert "producer fenced" in first.log()
    finally:
        first.stop()
        second.stop()
