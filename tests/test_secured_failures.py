"""What the worker does when a secured cluster refuses it: one clear line, nothing committed past it.

Each test starts the worker as ``ecg-worker`` with its least-privilege ACLs (:mod:`ecg_anomaly.base.acls`)
less one, or with a wrong secret or CA. A refused write is retried in place until the ACL is granted
(the worker is not ready meanwhile and counts the error); a refused connection or transactional id
ends the worker with exit code 1 and one line saying why. The secret is never in any output.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from ecg_anomaly.base.acls import Acl, worker_acls
from ecg_anomaly.worker.model import load_model
from tests.support.artifact import load_test_split
from tests.support.secure import SecuredKafka, other_ca
from tests.support.worker import WorkerProcess, produce_beats, produce_raw, read_topic, wait_for

pytestmark = pytest.mark.kafka

BROKER_TIMEOUT = 8.0


def _lines(worker: WorkerProcess) -> list[dict]:
    return [orjson.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]


def _start(
    secured: SecuredKafka,
    topics: Callable[..., str],
    group: str,
    model: Path,
    log: Path,
    flags: dict[str, str],
    guarantee: str = "at-least-once",
    leave_out: Callable[[Acl, dict[str, str]], bool] = lambda acl, topics: False,
    env: dict[str, str] | None = None,
) -> tuple[WorkerProcess, dict[str, str]]:
    """A worker on fresh topics (input: one partition) with its ACLs but those ``leave_out`` picks."""
    names = {
        "input_topic": topics(partitions=1, prefix="beats"),
        "anomaly_topic": topics(partitions=1, prefix="anomalies"),
        "scores_topic": topics(partitions=1, prefix="scores"),
        "dlq_topic": topics(partitions=1, prefix="dlq"),
    }
    acls = worker_acls(*names.values(), group, guarantee == "exactly-once")
    secured.grant(acl for acl in acls if not leave_out(acl, names))
    options = {k: v for k, v in flags.items() if k != "bootstrap_servers"}
    worker = WorkerProcess(
        flags["bootstrap_servers"],
        model,
        names["input_topic"],
        group,
        log,
        env=env,
        guarantee=guarantee,
        broker_timeout=BROKER_TIMEOUT,
        connect_timeout=3,
        commit_interval_ms=200,
        **options,
        **{k: v for k, v in names.items() if k != "input_topic"},
    )
    return worker.start(), names


def _exit_line(worker: WorkerProcess, secret: str) -> tuple[float, str]:
    """Seconds until the worker exited 1, and its one critical line; no traceback, ``secret`` nowhere."""
    started = time.monotonic()
    code = worker.wait(BROKER_TIMEOUT + 30)
    seconds = time.monotonic() - started
    text = worker.log_path.read_text()
    assert code == 1, text[-3000:]
    # the worker's last word: a failure while running, or one while starting
    critical = [
        line
        for line in _lines(worker)
        if line["level"] == "CRITICAL" or line["message"].startswith("cannot start:")
    ]
    assert len(critical) == 1, text[-3000:]
    assert "Traceback" not in text
    assert secret not in text
    return seconds, critical[0]["message"]


def test_a_wrong_password_ends_the_worker_naming_authentication(
    secured_kafka: SecuredKafka,
    secure_topic_factory: Callable[..., str],
    group_factory: Callable[..., str],
    small_model: Path,
    tmp_path: Path,
) -> None:
    flags = secured_kafka.scram_flags()
    del flags["sasl_password_file"]
    wrong = "wrong-" + secured_kafka.password("ecg-worker")[::-1]
    group = group_factory("worker")
    worker, _ = _start(
        secured_kafka,
        secure_topic_factory,
        group,
        small_model,
        tmp_path / "w.log",
        flags,
        env={"ECG_KAFKA_SASL_PASSWORD": wrong},
    )
    seconds, line = _exit_line(worker, wrong)
    assert "authentication failed" in line
    assert seconds < BROKER_TIMEOUT + 15
    assert secured_kafka.committed(group) == {}


def test_a_ca_that_did_not_sign_the_broker_certificate_ends_the_worker_naming_tls(
    secured_kafka: SecuredKafka,
    secure_topic_factory: Callable[..., str],
    group_factory: Callable[..., str],
    small_model: Path,
    tmp_path: Path,
) -> None:
    flags = {**secured_kafka.mtls_flags(), "ssl_cafile": str(other_ca(tmp_path))}
    group = group_factory("worker")
    worker, _ = _start(secured_kafka, secure_topic_factory, group, small_model, tmp_path / "w.log", flags)
    _, line = _exit_line(worker, secured_kafka.file("ecg-worker.key-password").read_text())
    assert "TLS" in line and "certificate verify failed" in line
    assert secured_kafka.committed(group) == {}


def test_a_missing_transactional_id_acl_ends_the_exactly_once_worker_naming_it(
    secured_kafka: SecuredKafka,
    secure_topic_factory: Callable[..., str],
    group_factory: Callable[..., str],
    small_model: Path,
    tmp_path: Path,
) -> None:
    group = group_factory("worker")
    worker, _ = _start(
        secured_kafka,
        secure_topic_factory,
        group,
        small_model,
        tmp_path / "w.log",
        secured_kafka.scram_flags(),
        guarantee="exactly-once",
        leave_out=lambda acl, _: acl.resource == "TRANSACTIONAL_ID",
    )
    _, line = _exit_line(worker, secured_kafka.password("ecg-worker"))
    assert f"transactional id {group}-" in line and "TransactionalId" in line
    assert secured_kafka.committed(group) == {}


def _beats(model: Path, count: int, anomalous: bool) -> np.ndarray:
    """``count`` beats the model clearly scores as anomalies, or clearly as normal."""
    beats, _ = load_test_split()
    scorer = load_model(model, "", None, 1)
    scores = scorer.score(beats).score
    chosen = beats[scores > 1.5 * scorer.threshold] if anomalous else beats[scores < 0.7 * scorer.threshold]
    return np.resize(chosen, (count, beats.shape[1]))


@pytest.mark.parametrize(
    ("guarantee", "refused"),
    [("at-least-once", "dlq_topic"), ("exactly-once", "anomaly_topic")],
)
def test_a_missing_write_acl_on_an_output_holds_the_offsets_until_granted(
    guarantee: str,
    refused: str,
    secured_kafka: SecuredKafka,
    secure_topic_factory: Callable[..., str],
    group_factory: Callable[..., str],
    small_model: Path,
    tmp_path: Path,
) -> None:
    """The batch whose output is refused is rewound, again and again, and nothing past it committed:
    the worker says which topic and operation, is not ready, counts the error; once WRITE is granted
    every input has its outputs, none missing, and none twice where the guarantee promises it."""
    group = group_factory("worker")
    worker, names = _start(
        secured_kafka,
        secure_topic_factory,
        group,
        small_model,
        tmp_path / "w.log",
        secured_kafka.scram_flags(),
        guarantee=guarantee,
        leave_out=lambda acl, names: acl.name == names[refused] and acl.operation == "WRITE",
    )
    worker.wait_ready()
    admin = secured_kafka.admin_bootstrap
    produce_beats(admin, names["input_topic"], _beats(small_model, 20, anomalous=False))
    wait_for(lambda: secured_kafka.committed(group) == {0: 20}, 60, "the first 20 normal beats committed")

    # then a record that needs the refused topic: a malformed one (dead letter) or an anomalous beat
    if refused == "dlq_topic":
        produce_raw(admin, names["input_topic"], [(b"source-x", b"{not json", [])])
    else:
        produce_beats(admin, names["input_topic"], _beats(small_model, 5, anomalous=True))
    produce_beats(admin, names["input_topic"], _beats(small_model, 20, anomalous=False))
    stage = "produce" if guarantee == "at-least-once" else "transaction"
    errors = f'ecg_processing_errors_total{{stage="{stage}"}}'
    wait_for(lambda: worker.metrics().get(errors, 0) >= 3, 60, "three refused attempts")
    assert worker.status("/readyz") == 503
    assert worker.proc.poll() is None, worker.log()
    assert secured_kafka.committed(group) == {0: 20}  # nothing from the refused batch on
    refusals = [line for line in _lines(worker) if line["logger"] == "ecg_anomaly.worker.delivery"]
    assert refusals and all(f"WRITE to topic {names[refused]}" in r["message"] for r in refusals), refusals

    secured_kafka.grant([Acl("TOPIC", names[refused], "WRITE", "granted late")])
    total = 41 if refused == "dlq_topic" else 45
    wait_for(lambda: secured_kafka.committed(group) == {0: total}, 60, "every offset committed once granted")
    wait_for(lambda: worker.status("/readyz") == 200, 30, "ready again")
    worker.stop()
    assert worker.wait() == 0

    reader = secured_kafka.kafka_python()
    scores = [orjson.loads(r.value) for r in read_topic("", names["scores_topic"], True, **reader)]
    anomalies = [orjson.loads(r.value) for r in read_topic("", names["anomaly_topic"], True, **reader)]
    dead = read_topic("", names["dlq_topic"], True, **reader)
    scored = Counter(s["input"]["offset"] for s in scores)
    if refused == "dlq_topic":
        assert [r.headers for r in dead] and len(dead) == 1  # refused until granted, then written once
        assert set(scored) == set(range(41)) - {20}
    else:
        assert dead == []
        assert set(scored) == set(range(45))
        assert max(scored.values()) == 1  # exactly-once: no input scored twice
        assert len(anomalies) == len({a["event_id"] for a in anomalies})
    flagged = {s["event_id"] for s in scores if s["anomaly"]}
    assert {a["event_id"] for a in anomalies} == flagged
    assert secured_kafka.password("ecg-worker") not in worker.log_path.read_text()
