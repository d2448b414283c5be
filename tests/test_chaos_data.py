"""Chaos scenarios about data and outputs: poison records (7), failing output writes (8), a corrupt model (9).

All full-length only (marked ``chaos``); each prints one verdict line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from ecg_anomaly.schemas import messages as m
from tests.support.artifact import load_test_split
from tests.support.chaos import ChaosRun
from tests.support.poison import FUTURE_TOPIC_AFTER_MS, JSON_HEADERS, LARGE_TOPIC_BYTES, POISON
from tests.support.worker import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.chaos]


def _poison_feed(bootstrap: str, topic: str, total: int, rate: float) -> dict[tuple[int, int], str]:
    """``total`` records, every 100th a poison one (cycling through the kinds); returns offset → reason."""
    beats, _ = load_test_split()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024, max_request_size=LARGE_TOPIC_BYTES
    )
    pending: list[tuple[object, str]] = []
    start = time.monotonic()
    for i in range(total):
        if i % 100 == 99:
            poison = POISON[(i // 100) % len(POISON)]
            stamp = None if poison.stamp is None else poison.stamp(int(time.time() * 1000))
            future = producer.send(
                topic, key=poison.key, value=poison.value, headers=poison.headers, timestamp_ms=stamp
            )
            pending.append((future, poison.reason))
        else:
            source = f"source-{i % 11}"
            value = m.encode_beat_json(source, beats[i % len(beats)], beat_id=f"b{i}")
            producer.send(topic, key=source.encode(), value=value, headers=JSON_HEADERS)
        if i % 50 == 49 and (ahead := (i + 1) / rate - (time.monotonic() - start)) > 0:
            time.sleep(ahead)
    producer.flush(120)
    producer.close()
    expected = {}
    for future, reason in pending:
        meta = future.get(timeout=60)  # type: ignore[attr-defined]
        expected[(meta.partition, meta.offset)] = reason
    return expected


@pytest.mark.timeout(900)
def test_chaos_7_poison_corpus(kafka_bootstrap: str, small_model: Path, tmp_path: Path) -> None:
    total = 12_000
    # The input topic takes every kind (records up to 5 MB, timestamps days ahead); the dead-letter
    # topic stays at the broker's defaults, so some dead letters are written reduced.
    permissive = {
        "max.message.bytes": str(LARGE_TOPIC_BYTES),
        "message.timestamp.after.max.ms": str(FUTURE_TOPIC_AFTER_MS),
    }
    run = ChaosRun(kafka_bootstrap, small_model, tmp_path, "exactly-once", input_config=permissive)
    sup = run.supervise()
    try:
        sup.wait_ready()
        run.total = total
        expected = _poison_feed(kafka_bootstrap, run.topics["input"], total, 1000.0)
        run.wait_lag_zero(240)
    finally:
        exits = run.stop_all()
    verdict = run.verdict()
    wrong = {
        key: (reason, copies[0].reason or copies[0].kind)
        for key, reason in expected.items()
        if (copies := verdict.outcomes.get(key)) and copies[0].reason != reason
    }
    bad_scored = verdict.dead_lettered - len(expected)  # good records dead-lettered (if positive)
    passed = verdict.passed(True) and not wrong and bad_scored == 0 and sup.restarts == 0 and exits == [0]
    run.report(
        f"7 poison corpus {len(POISON)} kinds 1/100",
        verdict,
        passed,
        poison=len(expected),
        wrong_reason=len(wrong),
        restarts=sup.restarts,
    )
    assert not wrong, sorted(wrong.items())[:10]
    assert verdict.missing == [] and verdict.duplicates == 0 and bad_scored == 0
    assert sup.restarts == 0 and exits == [0]


def _set_topic_config(bootstrap: str, topic: str, name: str, value: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="chaos-admin")
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={name: value})])
    finally:
        admin.close()


@pytest.mark.timeout(900)
def test_chaos_8_output_limit_shrinks(kafka_bootstrap: str, small_model: Path, tmp_path: Path) -> None:
    """The scores topic's max.message.bytes drops to 100 bytes for 60 s mid-stream, so no score record
    fits: the first refused write makes the worker re-read the limits, and until the limit is raised
    again (and read again, within 30 s) its beats are dead-lettered output_too_large. Nothing is lost,
    nothing stops, and the beats after it are scored again."""
    run = ChaosRun(kafka_bootstrap, small_model, tmp_path, "at-least-once", kafka_timeout=5)
    sup = run.supervise()
    try:
        sup.wait_ready()
        run.start_feed(20_000, 200.0)
        time.sleep(15)
        _set_topic_config(kafka_bootstrap, run.topics["scores_topic"], "max.message.bytes", "100")
        time.sleep(60)
        _set_topic_config(kafka_bootstrap, run.topics["scores_topic"], "max.message.bytes", "1048588")
        run.wait_feed()
        recovered = run.wait_lag_zero(240)
    finally:
        exits = run.stop_all()
    verdict = run.verdict()
    too_large = verdict.reasons.get("output_too_large", 0)
    # 200 beats/s for 60 s, less until the first refusal is seen, more until the raise is read
    dead_lettered_window = 60 * 200 * 0.5 <= too_large <= 95 * 200
    tail = max(verdict.outcomes)  # the last beats were scored again
    scored_again = verdict.outcomes[tail][0].kind != "dead_letter"
    passed = (
        verdict.passed(False)
        and dead_lettered_window
        and scored_again
        and sup.restarts == 0
        and verdict.inputs == 20_000
        and exits == [0]
    )
    run.report(
        "8 scores topic max.message.bytes 100 for 60s",
        verdict,
        passed,
        output_too_large=too_large,
        events_then_too_large=verdict.events_then_too_large,
        restarts=sup.restarts,
        lag_zero_after_feed=recovered,
    )
    assert verdict.missing == [] and verdict.differing == 0 and verdict.inputs == 20_000
    assert dead_lettered_window and scored_again, too_large
    assert sup.restarts == 0 and exits == [0]


@pytest.mark.timeout(900)
def test_chaos_9_corrupt_model_reload(kafka_bootstrap: str, small_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(small_model.read_bytes())
    run = ChaosRun(kafka_bootstrap, model, tmp_path, "exactly-once", reload_interval=1)
    sup = run.supervise()
    try:
        worker = sup.current
        worker.wait_ready()
        version_before = [k for k in worker.metrics() if k.startswith("ecg_model_info{")]
        run.start_feed(10_000, 500.0)
        wait_for(lambda: worker.metrics()["ecg_beats_consumed_total"] > 1000, 120, "scoring to start")
        corrupt = tmp_path / "model.onnx.new"
        corrupt.write_bytes(os.urandom(4096))
        os.replace(corrupt, model)  # how a deployment swaps the file: an atomic rename
        wait_for(
            lambda: worker.metrics().get('ecg_processing_errors_total{stage="model_reload"}', 0) >= 1,
            60,
            "the reload error to be counted",
        )
        consumed = worker.metrics()["ecg_beats_consumed_total"]
        wait_for(lambda: worker.metrics()["ecg_beats_consumed_total"] > consumed, 60, "scoring to go on")
        run.wait_feed()
        run.wait_lag_zero(240)
        metrics = worker.metrics()
        reload_errors = metrics['ecg_processing_errors_total{stage="model_reload"}']
        same_model = [k for k in metrics if k.startswith("ecg_model_info{")] == version_before
    finally:
        exits = run.stop_all()
    verdict = run.verdict()
    passed = verdict.passed(True) and same_model and sup.restarts == 0 and exits == [0]
    run.report(
        "9 corrupt model on hot reload",
        verdict,
        passed,
        reload_errors=int(reload_errors),
        kept_old_model=same_model,
        restarts=sup.restarts,
    )
    assert verdict.missing == [] and verdict.duplicates == 0
    assert same_model and reload_errors >= 1 and sup.restarts == 0 and exits == [0]
