"""``ecg-anomaly topics`` against the real broker, read back with kafka-python's admin client."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from ecg_anomaly.base.options import resolve
from ecg_anomaly.cli import main
from ecg_anomaly.tools.topics import OPTIONS, plan
from tests.support.broker import REPO, free_port
from tests.support.worker import env_without_worker_settings, wait_for

# The local broker has one node: one copy of each partition.
ONE_BROKER = ["--replication-factor", "1", "--min-insync-replicas", "1"]


def _names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "input": f"topics-beats-{tag}",
        "anomaly": f"topics-anomalies-{tag}",
        "scores": f"topics-scores-{tag}",
        "dlq": f"topics-dlq-{tag}",
        "alerts": f"topics-alerts-{tag}",
        "episode-changelog": f"topics-changelog-{tag}",
    }


def _topics(bootstrap: str, names: dict[str, str], *options: str) -> int:
    flags = [f"--{role}-topic={name}" for role, name in names.items()]
    return main(["topics", "--bootstrap-servers", bootstrap, *flags, *ONE_BROKER, *options])


def _read_back(admin: KafkaAdminClient, topic: str) -> tuple[int, int, dict[str, str]]:
    """Partitions, replication factor, and the topic's own (non-default) configs, as the broker has them."""
    (described,) = admin.describe_topics([topic])
    partitions = described["partitions"]
    result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    configs = {k: str(v["value"]) for k, v in result["topic"][topic].items()}
    return len(partitions), min(len(p["replica_nodes"]) for p in partitions), configs


@pytest.mark.kafka
def test_create_makes_the_planned_topics_and_a_second_run_finds_them_as_planned(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, capsys: pytest.CaptureFixture[str]
) -> None:
    names = _names()
    assert _topics(kafka_bootstrap, names, "--partitions", "4", "--retention-hours", "2", "--create") == 0
    out = capsys.readouterr().out
    assert out.count(": created (") == 6, out

    beats = _read_back(kafka_admin, names["input"])
    assert beats == (4, 1, {"retention.ms": "7200000", "min.insync.replicas": "1"})
    assert _read_back(kafka_admin, names["anomaly"]) == beats
    scores = _read_back(kafka_admin, names["scores"])
    assert scores == (4, 1, {"retention.ms": str(24 * 3_600_000), "min.insync.replicas": "1"})
    dlq = _read_back(kafka_admin, names["dlq"])
    assert dlq == (1, 1, {"retention.ms": str(720 * 3_600_000), "min.insync.replicas": "1"})
    assert _read_back(kafka_admin, names["alerts"]) == beats
    # the episodes' state: compacted (kept per source, not by age), the input's partitions
    changelog = (4, 1, {"cleanup.policy": "compact", "min.insync.replicas": "1"})
    assert _read_back(kafka_admin, names["episode-changelog"]) == changelog

    assert _topics(kafka_bootstrap, names, "--partitions", "4", "--retention-hours", "2") == 0
    assert capsys.readouterr().out.count(": ok (") == 6


@pytest.mark.kafka
def test_check_reports_missing_and_different_topics_and_changes_nothing(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, capsys: pytest.CaptureFixture[str]
) -> None:
    names = _names()
    # the worker publishes no scores and has no episodes: no such topics are planned
    for role in ("scores", "alerts", "episode-changelog"):
        del names[role]
    kafka_admin.create_topics(
        [
            NewTopic(
                names["input"], 3, 1, topic_configs={"retention.ms": "3600000", "min.insync.replicas": "1"}
            ),
            NewTopic(
                names["anomaly"],
                12,
                1,
                topic_configs={"min.insync.replicas": "1", "retention.ms": "604800000"},
            ),
        ]
    )
    made = {names["input"], names["anomaly"]}
    wait_for(lambda: made <= set(kafka_admin.list_topics()), 30, "the topics in the broker's metadata")
    assert _topics(kafka_bootstrap, {**names, "scores": "", "alerts": ""}) == 1
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines.keys() == set(names.values())
    assert (
        lines[names["input"]]
        == "differs: 3 partitions (planned 12); retention.ms=3600000 (planned 604800000)"
    )
    assert lines[names["anomaly"]].startswith("ok (12 partitions, replication factor 1,")
    assert lines[names["dlq"]].startswith("missing (planned 1 partitions")
    # Nothing was created or altered: a difference is for a person to decide.
    assert names["dlq"] not in kafka_admin.list_topics()
    assert _read_back(kafka_admin, names["input"])[:2] == (3, 1)


@pytest.mark.kafka
def test_the_changelog_follows_an_input_topic_that_exists_with_another_partition_count(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A producer auto-created the input with 2 partitions: the changelog must get 2, or the worker
    refuses to start with episodes on."""
    names = _names()
    kafka_admin.create_topics([NewTopic(names["input"], 2, 1)])
    wait_for(lambda: names["input"] in kafka_admin.list_topics(), 30, "the input in the broker's metadata")
    assert _topics(kafka_bootstrap, names, "--partitions", "4", "--create") == 1  # the input differs
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines[names["input"]].startswith("differs: 2 partitions (planned 4)")
    assert lines[names["episode-changelog"]].startswith("created (2 partitions,")
    assert _read_back(kafka_admin, names["episode-changelog"])[0] == 2
    assert _read_back(kafka_admin, names["alerts"])[0] == 4

    _topics(kafka_bootstrap, names, "--partitions", "4")
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines[names["episode-changelog"]].startswith("ok (2 partitions,")


@pytest.mark.kafka
def test_a_topic_the_cluster_refuses_is_one_line(kafka_bootstrap: str) -> None:
    """Three copies on a one-broker cluster: the broker's reason, one line, exit 1."""
    names = _names()
    flags = [f"--{role}-topic={name}" for role, name in names.items()]
    result = _cli("topics", "--bootstrap-servers", kafka_bootstrap, *flags, "--create")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("ecg-anomaly topics: error: the cluster refused to create ")
    assert "replication factor" in result.stderr.lower()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--partitions", "0"], "--partitions: '0' is not valid (expected a positive integer)"),
        (["--min-insync-replicas", "4"], "--min-insync-replicas 4 is more than --replication-factor 3"),
        (["--retention-hours", "nan"], "--retention-hours: 'nan' is not valid"),
        (["--dlq-topic", "ecg.beats"], "the topics must differ: ecg.beats, ecg.anomalies, ecg.beats"),
    ],
)
def test_a_bad_option_is_one_line_before_any_connection(options: list[str], message: str) -> None:
    started = time.monotonic()
    # A port nothing listens on: a check that reached the network would wait for its timeout.
    result = _cli("topics", "--bootstrap-servers", f"127.0.0.1:{free_port()}", *options)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert time.monotonic() - started < 5


def test_an_unreachable_cluster_is_one_line_within_the_connect_timeout() -> None:
    started = time.monotonic()
    result = _cli("topics", "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--connect-timeout", "2")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr  # no librdkafka reconnect lines
    assert "cannot reach Kafka at 127.0.0.1:" in result.stderr and "within 2 s" in result.stderr
    assert time.monotonic() - started < 10


def test_topic_names_come_from_the_workers_variables() -> None:
    """In a worker's pod (its ConfigMap's ECG_*_TOPIC) the command checks that worker's topics."""
    env = {
        "ECG_INPUT_TOPIC": "in",
        "ECG_ANOMALY_TOPIC": "out",
        "ECG_DLQ_TOPIC": "dlq",
        "ECG_SCORES_TOPIC": "s",
    }
    values = resolve(OPTIONS, argparse.Namespace(), env)
    assert [t.name for t in plan(values)] == [
        "in",
        "out",
        "s",
        "dlq",
        "ecg.alerts",
        "ecg-worker-episodes-changelog",
    ]
    # the episodes' changelog is named after the group, as the worker names it, unless named
    values = resolve(
        OPTIONS, argparse.Namespace(), {**env, "ECG_GROUP_ID": "ward-7", "ECG_ALERTS_TOPIC": "al"}
    )
    changelog = plan(values)[-1]
    assert (changelog.name, changelog.partitions) == ("ward-7-episodes-changelog", 12)
    assert changelog.config == {"cleanup.policy": "compact", "min.insync.replicas": "2"}
    values = resolve(OPTIONS, argparse.Namespace(), {**env, "ECG_EPISODE_CHANGELOG_TOPIC": "state"})
    assert plan(values)[-1].name == "state"
    values = resolve(OPTIONS, argparse.Namespace(alerts_topic=""), env)  # --alerts-topic ''
    assert [t.name for t in plan(values)] == ["in", "out", "s", "dlq"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecg_anomaly.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env_without_worker_settings(),
        timeout=60,
    )
