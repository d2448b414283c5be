"""``ecg-anomaly replay`` and ``watch`` against a real broker, with a real worker between them."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from ecg_anomaly.cli import main
from ecg_anomaly.schemas import messages as m
from ecg_anomaly.tools.faults import FAULT_HEADER, FAULT_KINDS
from ecg_anomaly.tools.live_stats import parse_snapshot
from tests.support.artifact import build_small_artifact, load_test_split
from tests.support.worker import read_topic, wait_for

pytestmark = pytest.mark.kafka


def _replay(bootstrap: str, topic: str, *options: str) -> int:
    return main(
        ["replay", "--bootstrap-servers", bootstrap, "--topic", topic, "--progress-interval", "0", *options]
    )


def test_replay_sends_the_test_split_with_keys_labels_and_content_type(
    kafka_bootstrap: str, topic_factory: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topic_factory(partitions=3, prefix="beats")
    started = time.monotonic()
    assert _replay(kafka_bootstrap, topic, "--limit", "300", "--sources", "5", "--rate", "500") == 0
    assert time.monotonic() - started >= 299 / 500  # paced, not a burst
    assert "done: 300 beats" in capsys.readouterr().err

    records = sorted(
        read_topic(kafka_bootstrap, topic), key=lambda r: int(orjson.loads(r.value)["beat_id"][5:])
    )
    beats, labels = load_test_split()
    assert len(records) == 300
    assert {r.key for r in records} == {f"patient-{i:03d}".encode() for i in range(5)}
    for i, record in enumerate(records):
        beat = orjson.loads(record.value)
        assert m.header(record.headers, m.CONTENT_TYPE_HEADER) == m.JSON_CONTENT_TYPE
        assert beat["beat_id"] == f"test-{i}"
        assert beat["source_id"] == record.key.decode()
        assert beat["label"] == ("anomaly" if labels[i] else "normal")
        assert beat["beat_time"] == record.timestamp
        np.testing.assert_allclose(beat["values"], beats[i], rtol=1e-6)
    # Each source's beats are on one partition, in the order they were sent.
    for key in {r.key for r in records}:
        assert len({r.partition for r in records if r.key == key}) == 1


def test_replay_binary_from_a_file_in_a_loop(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    rows = np.random.default_rng(1).normal(size=(7, m.BEAT_LENGTH)).astype(np.float32)
    data = tmp_path / "beats.csv"
    data.write_text("".join(",".join(f"{v:.6f}" for v in row) + ",1\n" for row in rows))
    topic = topic_factory(partitions=1, prefix="beats")
    assert (
        _replay(
            kafka_bootstrap, topic, "--data", str(data), "--loop", "--limit", "20", "--encoding", "binary"
        )
        == 0
    )

    records = read_topic(kafka_bootstrap, topic)
    assert len(records) == 20
    assert all(m.header(r.headers, m.CONTENT_TYPE_HEADER) == m.BINARY_CONTENT_TYPE for r in records)
    sent = np.stack([np.frombuffer(r.value, dtype="<f4") for r in sorted(records, key=lambda r: r.offset)])
    np.testing.assert_allclose(
        sent, np.concatenate([rows, rows, rows[:6]]), atol=1e-6
    )  # 6 decimals in the file


def test_bad_records_are_dead_lettered_with_their_reasons_and_watch_prints_both_topics(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    worker_factory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = build_small_artifact(tmp_path / "model")
    beats_topic = topic_factory(partitions=3, prefix="beats")
    anomalies = topic_factory(partitions=2, prefix="anomalies")
    dlq = topic_factory(partitions=1, prefix="dlq")
    worker = worker_factory(model, beats_topic, anomaly_topic=anomalies, dlq_topic=dlq, scores_topic="")
    try:
        worker.wait_ready()
        assert (
            _replay(kafka_bootstrap, beats_topic, "--limit", "400", "--bad-rate", "0.15", "--seed", "3") == 0
        )
        sent = read_topic(kafka_bootstrap, beats_topic)
        injected = Counter(
            m.header(r.headers, FAULT_HEADER) for r in sent if m.header(r.headers, FAULT_HEADER)
        )
        assert set(injected) == set(FAULT_KINDS)  # every documented reason provoked
        n_bad = sum(injected.values())
        wait_for(
            lambda: worker.metrics()["ecg_beats_consumed_total"] >= len(sent), 60, "the worker to consume all"
        )
        scrape = worker.metrics()
        with urllib.request.urlopen(worker.url("/metrics"), timeout=5) as response:
            text = response.read().decode()  # the same text the demo reads
    finally:
        worker.stop()

    letters = read_topic(kafka_bootstrap, dlq)
    assert len(letters) == n_bad
    assert all(m.header(r.headers, m.DLQ_REASON) == m.header(r.headers, FAULT_HEADER) for r in letters)
    assert Counter(m.header(r.headers, m.DLQ_REASON) for r in letters) == injected

    # The demo's reading of the same scrape agrees with the worker's counters.
    snapshot = parse_snapshot(text, at=0.0)
    assert snapshot.consumed == len(sent) == snapshot.outcomes
    assert snapshot.dead_letters == {
        reason: float(injected.get(reason, 0)) for reason in m.DEAD_LETTER_REASONS
    }
    assert sum(snapshot.confusion.values()) == 400  # every beat carried its label
    tp = scrape['ecg_labelled_beats_total{label="anomaly",outcome="anomaly"}']
    fp = scrape['ecg_labelled_beats_total{label="normal",outcome="anomaly"}']
    assert snapshot.precision_recall()[0] == pytest.approx(tp / (tp + fp))

    capsys.readouterr()
    watch = ["watch", "--bootstrap-servers", kafka_bootstrap, "--from-beginning", "--timeout", "5"]
    assert main([*watch, "--dlq", "--topic", dlq, "--limit", str(n_bad)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == n_bad
    for line, letter in zip(lines, letters, strict=True):
        assert m.header(letter.headers, m.DLQ_REASON) in line
        assert f"{beats_topic} {m.header(letter.headers, m.DLQ_PARTITION)}@" in line
        assert "replay expected" not in line

    events = read_topic(kafka_bootstrap, anomalies)
    assert events and len(events) == snapshot.anomalies
    assert main([*watch, "--topic", anomalies]) == 0  # no limit: ends after 5 s of silence
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(events)
    by_beat = {orjson.loads(e.value)["beat_id"]: orjson.loads(e.value) for e in events}
    for line in lines:
        event = by_beat[line.split("  beat ")[1].split()[0]]
        assert line.startswith(event["beat_time"])
        assert f"score {event['score']:.4f} > {event['threshold']:.4f}" in line
        assert event["severity"] in line and f"label {event['label']}" in line
        where = event["error_location"]
        assert f"samples {where['window_start']}-{where['window_end'] - 1}" in line


def test_watch_without_from_beginning_prints_only_new_records(
    kafka_bootstrap: str, topic_factory: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topic_factory(partitions=1, prefix="anomalies")
    assert _replay(kafka_bootstrap, topic, "--limit", "3") == 0  # old records: not anomaly events at all
    assert main(["watch", "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--timeout", "1"]) == 0
    assert capsys.readouterr().out == ""
    assert (
        main(["watch", "--bootstrap-servers", kafka_bootstrap, "--topic", "no-such-topic", "--timeout", "1"])
        == 1
    )


def test_replay_and_watch_never_import_tensorflow(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=1, prefix="beats")
    common = f"'--bootstrap-servers', '{kafka_bootstrap}', '--topic', '{topic}'"
    code = (
        "import sys; from ecg_anomaly.cli import main; "
        f"assert main(['replay', {common}, '--limit', '5']) == 0; "
        f"assert main(['watch', {common}, '--timeout', '0.5']) == 0; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
