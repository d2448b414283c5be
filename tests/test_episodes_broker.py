"""Alert episodes against the real broker: a scripted replay gives exactly the expected records.

Each source's beats are scripted (``tests.support.episode_feed``); the records on the alerts topic
are checked one by one against what the rule says, under both guarantees, and the changelog topic
the worker created is checked too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from ecg_anomaly.cli import main
from ecg_anomaly.schemas import messages as m
from tests.support.episode_feed import T0, BeatValues, alerts_by_source, interleaved, send
from tests.support.worker import wait_for

pytestmark = pytest.mark.kafka

RULE = {
    "episode_open_anomalies": 3,
    "episode_window": 5,
    "episode_close_normal": 4,
    "episode_silence": 20,
    "episode_update_interval": 5,
}
PATTERNS = {  # one character per second of beat time: N normal, A anomalous, P the peak, . silent
    "run": "NNNNNAAAAAPAANNNN",
    "scattered": "NANNNANNNANNNA",
    "open-at-end": "NNAAAA",
    "gone": "AAAA",
    "keeper": "N" * 30,
}
PARTITION_OF = {"run": 0, "scattered": 1, "open-at-end": 1, "gone": 2, "keeper": 2}


def _time(second: int) -> str:
    return m.iso_time(T0 + 1000 * second)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_a_scripted_replay_gives_exactly_the_expected_alert_records(
    kafka_bootstrap: str,
    small_model: Path,
    worker_factory,
    topic_factory,
    kafka_admin: KafkaAdminClient,
    guarantee: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = BeatValues.of(small_model)
    alerts_topic = topic_factory(partitions=3, prefix="alerts")
    worker = worker_factory(
        small_model, alerts_topic=alerts_topic, episodes=True, guarantee=guarantee, **RULE
    )
    worker.wait_ready()
    topic = worker.args[worker.args.index("--input-topic") + 1]
    placed = send(kafka_bootstrap, topic, interleaved(PATTERNS), values, PARTITION_OF)
    total = sum(len(p.replace(".", "")) for p in PATTERNS.values())
    wait_for(lambda: worker.metrics()["ecg_beats_consumed_total"] >= total, 120, "every beat consumed")
    wait_for(
        lambda: worker.metrics()['ecg_episode_transitions_total{kind="closed"}'] >= 2,
        30,
        "both closes counted",
    )
    found = alerts_by_source(kafka_bootstrap, alerts_topic, committed_only=True)

    def at(source: str, second: int) -> dict[str, object]:
        partition, offset = placed[(source, T0 + 1000 * second)]
        return {"topic": topic, "partition": partition, "offset": offset, "beat_time": _time(second)}

    def record(source, kind, seq, first, last, anomalous, total_, opened, peak, reason=None) -> dict:
        peak_score = values.peak_score if PATTERNS[source][peak] == "P" else values.anomalous_score
        doc = {
            "episode_id": m.episode_id(topic, *placed[(source, T0 + 1000 * opened)]),
            "source_id": source,
            "kind": kind,
            "sequence": seq,
            "first_beat_time": _time(first),
            "last_beat_time": _time(last),
            "anomalous_beats": anomalous,
            "total_beats": total_,
            "peak_score": pytest.approx(peak_score, rel=1e-6),
            "peak_severity": m.severity(peak_score, values.threshold),
            "model_version": "test-tiny",
            "opened_by": at(source, opened),
            "peak": at(source, peak),
        }
        if reason is not None:
            doc["closed_reason"] = reason
        return doc

    expected = {
        # opens at the third anomalous beat (second 7) from the first (5); updated 5 s later with the
        # peak (10); closed by 4 normal beats: the last anomalous beat stays 12
        "run": [
            record("run", "opened", 0, 5, 7, 3, 3, 7, 5),
            record("run", "updated", 1, 5, 12, 8, 8, 7, 10),
            record("run", "closed", 2, 5, 12, 8, 8, 7, 10, "recovered"),
        ],
        # 3 anomalous beats never within 5: nothing
        # opened, not closed: still open when the feed ends
        "open-at-end": [record("open-at-end", "opened", 0, 2, 4, 3, 3, 4, 2)],
        # silent after second 3: closed at the first beat of its partition (keeper's) past 3 + 20 s
        "gone": [
            record("gone", "opened", 0, 0, 2, 3, 3, 2, 0),
            record("gone", "closed", 1, 0, 3, 4, 4, 2, 0, "silent"),
        ],
    }
    assert found == expected
    for alerts in found.values():
        for alert in alerts:
            m.validate_alert(alert)

    # watch --alerts prints each of them, one line each, in its partition's order
    capsys.readouterr()
    watch = ["watch", "--bootstrap-servers", kafka_bootstrap, "--alerts", "--topic", alerts_topic]
    assert main([*watch, "--from-beginning", "--limit", "6", "--timeout", "10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    for source, alerts in found.items():
        mine = [line for line in lines if f"  {source} " in line]
        assert len(mine) == len(alerts)
        for line, alert in zip(mine, alerts, strict=True):
            assert line.startswith(f"{alert['last_beat_time']}  {source} ")
            assert f" {alert['kind']}" in line and f"#{alert['sequence']} " in line
            assert f"{alert['anomalous_beats']}/{alert['total_beats']} beats anomalous since" in line
            assert f"episode {alert['episode_id']}" in line
            assert ("(recovered)" in line or "(silent)" in line) == (alert["kind"] == "closed")

    metrics = worker.metrics()
    assert metrics["ecg_episodes_open"] == 1  # open-at-end's
    assert metrics["ecg_episode_sources"] == 2  # and scattered's, with its last beat anomalous
    assert metrics['ecg_episode_transitions_total{kind="opened"}'] == 3
    assert metrics['ecg_episode_transitions_total{kind="updated"}'] == 1
    assert metrics['ecg_episodes_closed_total{reason="silent"}'] == 1
    assert metrics['ecg_episodes_closed_total{reason="recovered"}'] == 1

    group = worker.args[worker.args.index("--group-id") + 1]
    changelog = f"{group}-episodes-changelog"
    assert len(kafka_admin.describe_topics([changelog])[0]["partitions"]) == 3
    configs = kafka_admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, changelog)])
    assert configs["topic"][changelog]["cleanup.policy"]["value"] == "compact"
