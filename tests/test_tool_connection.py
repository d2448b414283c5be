"""The tools connect through the shared connection settings (flags or ECG_* variables), like the worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ecg_anomaly.schemas import messages as m
from tests.support.cli import KUBERNETES_SERVICE_LINKS, run_cli
from tests.support.worker import produce_raw, read_topic

pytestmark = pytest.mark.kafka


def _dead_letter(origin: str, n: int) -> tuple[bytes, bytes, list]:
    headers = [(m.CONTENT_TYPE_HEADER, m.JSON_CONTENT_TYPE.encode()), (m.DLQ_REASON, b"oversized")]
    headers += [(m.DLQ_MESSAGE, b"too large"), (m.DLQ_TOPIC, origin.encode()), (m.DLQ_PARTITION, b"0")]
    return (f"patient-{n}".encode(), f"value-{n}".encode(), [*headers, (m.DLQ_OFFSET, str(n).encode())])


def test_replay_watch_and_redrive_connect_from_the_environment_beside_kubernetes_service_links(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[..., str]
) -> None:
    """No connection flag: the cluster and its (plain) security come from the worker's ECG_* variables,
    and the service links Kubernetes adds for a Service named kafka change nothing."""
    env = {
        **KUBERNETES_SERVICE_LINKS,
        "ECG_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ECG_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "ECG_KAFKA_CONNECT_TIMEOUT": "10",
    }
    beats, dlq = topic_factory(partitions=2, prefix="beats"), topic_factory(partitions=1, prefix="dlq")

    replay = run_cli("replay", "--topic", beats, "--limit", "30", "--progress-interval", "0", env=env)
    assert replay.returncode == 0, replay.err
    assert f"to {beats} at {kafka_bootstrap} (PLAINTEXT)" in replay.err
    assert "acknowledged 30 of 30 records, failed 0, unacknowledged 0" in replay.err
    assert len(read_topic(kafka_bootstrap, beats)) == 30

    produce_raw(kafka_bootstrap, dlq, [_dead_letter(beats, n) for n in range(4)])
    watch = run_cli("watch", "--dlq", "--topic", dlq, "--from-beginning", "--limit", "4", env=env)
    assert watch.returncode == 0, watch.err
    assert [line.split()[1:3] for line in watch.out.splitlines()] == [
        [f"patient-{n}", "oversized"] for n in range(4)
    ]

    redrive = run_cli("redrive", "--dlq", dlq, "--group", group_factory(), env=env)
    assert redrive.returncode == 0, redrive.err
    assert f"re-sent 4 dead letters (oversized 4) to {beats}; skipped 0" in redrive.err
    assert len(read_topic(kafka_bootstrap, beats)) == 34


@pytest.mark.parametrize(
    ("command", "security", "shown"),
    [
        (["replay", "--limit", "5"], {"ECG_KAFKA_SECURITY_PROTOCOL": "SSL"}, "SSL"),
        (
            ["watch"],
            {
                "ECG_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "ECG_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "ECG_KAFKA_SASL_USERNAME": "ecg-tools",
                "ECG_KAFKA_SASL_PASSWORD": "s3cret-pw",
            },
            "SASL_PLAINTEXT, SCRAM-SHA-512 as ecg-tools",
        ),
        (
            ["redrive", "--security-protocol", "SASL_SSL", "--sasl-username", "ecg-tools"],
            {"ECG_KAFKA_SSL_CHECK_HOSTNAME": "false"},
            "SASL_SSL, PLAIN as ecg-tools",
        ),
    ],
)
def test_the_tools_connect_with_the_security_they_are_given(
    command: list[str], security: dict[str, str], shown: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The test broker speaks plain Kafka only: a client that really uses TLS or SASL cannot talk to it,
    and says so in one line that shows how it connected but never the password."""
    password = tmp_path / "sasl-password"
    password.write_text("s3cret-pw\n")
    env = {"ECG_BOOTSTRAP_SERVERS": kafka_bootstrap, "ECG_KAFKA_CONNECT_TIMEOUT": "2", **security}
    if "--sasl-username" in command:
        command = [*command, "--sasl-password-file", str(password)]
    run = run_cli(*command, env=env)
    assert run.returncode == 1
    assert len(run.err_lines) == 1, run.err
    assert f"error: cannot reach Kafka at {kafka_bootstrap} ({shown}) within 2 s" in run.err
    assert "s3cret-pw" not in run.err + run.out
