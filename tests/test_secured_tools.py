"""Every command-line tool connects to a secured cluster the same way, with its own least-privilege ACLs.

``ecg-tools`` (a SCRAM user with a client certificate too) is granted what
:func:`ecg_anomaly.base.acls.tool_acls` lists for this test's topics; the demo connects as the admin,
since it creates topics and sets its group's offsets. The worker's runs over both listeners are in
``test_secured_throughput.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ecg_anomaly.base.acls import tool_acls
from ecg_anomaly.schemas import messages as m
from tests.support.broker import free_port
from tests.support.cli import run_cli
from tests.support.secure import SecuredKafka
from tests.support.worker import produce_raw, read_topic

pytestmark = pytest.mark.kafka


def _dead_letter(origin: str, n: int) -> tuple[bytes, bytes, list]:
    headers = [(m.CONTENT_TYPE_HEADER, m.JSON_CONTENT_TYPE.encode()), (m.DLQ_REASON, b"oversized")]
    headers += [(m.DLQ_MESSAGE, b"too large"), (m.DLQ_TOPIC, origin.encode()), (m.DLQ_PARTITION, b"0")]
    return (f"patient-{n}".encode(), f"value-{n}".encode(), [*headers, (m.DLQ_OFFSET, str(n).encode())])


def _secrets(secured: SecuredKafka) -> list[str]:
    return [secured.password("ecg-tools"), secured.file("ecg-tools.key-password").read_text().strip()]


def test_replay_watch_and_redrive_over_sasl_ssl_and_mutual_tls_with_their_acls(
    secured_kafka: SecuredKafka,
    secure_topic_factory: Callable[..., str],
    group_factory: Callable[..., str],
) -> None:
    beats, anomalies = secure_topic_factory(partitions=2, prefix="beats"), secure_topic_factory(prefix="anom")
    dlq, group = secure_topic_factory(prefix="dlq"), group_factory("redrive")
    for acls in tool_acls(beats, anomalies, dlq, group, watch_group="ecg-watch").values():
        secured_kafka.grant(acls, user="ecg-tools")
    scram = secured_kafka.scram_flags("ecg-tools")
    from_environment = {  # replay: every setting from ECG_* variables, the password too
        "ECG_BOOTSTRAP_SERVERS": scram["bootstrap_servers"],
        "ECG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "ECG_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "ECG_KAFKA_SASL_USERNAME": "ecg-tools",
        "ECG_KAFKA_SASL_PASSWORD": secured_kafka.password("ecg-tools"),
        "ECG_KAFKA_SSL_CAFILE": scram["ssl_cafile"],
    }
    reader = secured_kafka.kafka_python()

    replay = run_cli(
        "replay", "--topic", beats, "--limit", "30", "--progress-interval", "0", env=from_environment
    )
    assert replay.returncode == 0, replay.err
    assert "(SASL_SSL, SCRAM-SHA-512 as ecg-tools)" in replay.err
    assert "acknowledged 30 of 30 records, failed 0" in replay.err
    assert len(read_topic("", beats, **reader)) == 30

    produce_raw(secured_kafka.admin_bootstrap, dlq, [_dead_letter(beats, n) for n in range(4)])
    mtls = SecuredKafka.cli(secured_kafka.mtls_flags("ecg-tools"))
    watch = run_cli("watch", "--dlq", "--topic", dlq, "--from-beginning", "--limit", "4", *mtls)
    assert watch.returncode == 0, watch.err
    assert "(SSL, client certificate)" in watch.err
    assert [line.split()[1:3] for line in watch.out.splitlines()] == [
        [f"patient-{n}", "oversized"] for n in range(4)
    ]

    redrive = run_cli("redrive", "--dlq", dlq, "--group", group, *SecuredKafka.cli(scram))
    assert redrive.returncode == 0, redrive.err
    assert f"re-sent 4 dead letters (oversized 4) to {beats}; skipped 0" in redrive.err
    assert len(read_topic("", beats, **reader)) == 34
    for run in (replay, watch, redrive):
        assert not any(secret in run.out + run.err for secret in _secrets(secured_kafka))


def test_a_tool_without_its_acl_says_so_in_one_line(
    secured_kafka: SecuredKafka, secure_topic_factory: Callable[..., str]
) -> None:
    dlq = secure_topic_factory(prefix="dlq")  # nothing granted on it
    flags = SecuredKafka.cli(secured_kafka.scram_flags("ecg-tools"))
    watch = run_cli("watch", "--dlq", "--topic", dlq, "--connect-timeout", "5", *flags)
    assert watch.returncode == 1
    assert len(watch.err_lines) == 1, watch.err
    assert (
        f"topic {dlq} does not exist at " in watch.err and "(or this user may not DESCRIBE it)" in watch.err
    )
    assert secured_kafka.password("ecg-tools") not in watch.out + watch.err


def test_the_demo_runs_on_a_secured_cluster_given_its_connection(
    secured_kafka: SecuredKafka, small_model: Path
) -> None:
    """The demo's own cluster flags: no local broker started; the worker it starts connects the same way."""
    flags = SecuredKafka.cli(secured_kafka.scram_flags("admin"))
    options = ["--model", str(small_model), "--metrics-port", str(free_port()), "--partitions", "2"]
    demo = run_cli("demo", *options, "--rate", "200", "--duration", "3", "--interval", "1", *flags)
    assert demo.returncode == 0, demo.out + demo.err
    assert (
        f"broker: using {secured_kafka.broker.sasl_ssl_bootstrap} (SASL_SSL, SCRAM-SHA-512 as admin)"
        in demo.out
    )
    assert "worker consumed 6" in demo.out  # 600 beats and the malformed records
    assert "dead letters by reason match the injected faults" in demo.out
    assert "WARNING" not in demo.out
    assert secured_kafka.password("admin") not in demo.out + demo.err


def test_a_tool_without_the_client_certificate_the_broker_asks_for_names_tls(
    secured_kafka: SecuredKafka,
) -> None:
    """The mutual-TLS listener refuses a client without a certificate with a TLS alert that librdkafka
    reports as a transport failure: the line says TLS, not "no broker answers"."""
    flags = secured_kafka.mtls_flags("ecg-tools")
    del flags["ssl_certfile"], flags["ssl_keyfile"], flags["ssl_password_file"]
    replay = run_cli("replay", "--limit", "1", "--connect-timeout", "3", *SecuredKafka.cli(flags))
    assert replay.returncode == 1
    assert len(replay.err_lines) == 1, replay.err
    assert "TLS failed" in replay.err and "bad certificate" in replay.err, replay.err


def test_a_tool_with_a_wrong_password_names_authentication(secured_kafka: SecuredKafka) -> None:
    flags = secured_kafka.scram_flags("ecg-tools")
    del flags["sasl_password_file"]
    wrong = "not-" + secured_kafka.password("ecg-tools")
    env = {"ECG_KAFKA_SASL_PASSWORD": wrong}
    watch = run_cli("watch", "--connect-timeout", "3", *SecuredKafka.cli(flags), env=env)
    assert watch.returncode == 1
    assert len(watch.err_lines) == 1, watch.err
    assert "authentication failed" in watch.err and "invalid credentials" in watch.err, watch.err
    assert wrong not in watch.err + watch.out


def test_topics_creates_and_checks_the_workers_topics_over_mutual_tls_with_its_acls(
    secured_kafka: SecuredKafka, group_factory: Callable[..., str]
) -> None:
    names = {
        flag: group_factory(prefix)
        for flag, prefix in (
            ("input", "beats"),
            ("anomaly", "anom"),
            ("dlq", "dlq"),
            ("alerts", "alerts"),
            ("episode-changelog", "changelog"),
        )
    }
    acls = tool_acls(
        names["input"],
        names["anomaly"],
        names["dlq"],
        "unused",
        "unused",
        names["alerts"],
        names["episode-changelog"],
    )["topics"]
    secured_kafka.grant(acls, user="ecg-tools")
    plan = [arg for flag, name in names.items() for arg in (f"--{flag}-topic", name)]
    plan += ["--partitions", "2", "--replication-factor", "1", "--min-insync-replicas", "1"]
    mtls = SecuredKafka.cli(secured_kafka.mtls_flags("ecg-tools"))

    create = run_cli("topics", "--create", *plan, *mtls)
    assert create.returncode == 0, create.out + create.err
    check = run_cli("topics", *plan, *mtls)
    assert check.returncode == 0, check.out + check.err
    assert not any(
        secret in run.out + run.err for run in (create, check) for secret in _secrets(secured_kafka)
    )
