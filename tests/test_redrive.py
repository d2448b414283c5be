"""``ecg-anomaly redrive`` on a real broker: chosen reasons back to their topic, once, minus dlq headers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ecg_anomaly.cli import main
from ecg_anomaly.schemas import messages as m
from tests.support.worker import produce_raw, read_topic

pytestmark = pytest.mark.kafka


def _dead_letter(reason: str, origin: str | None, n: int) -> tuple[bytes, bytes, list]:
    headers = [(m.CONTENT_TYPE_HEADER, m.JSON_CONTENT_TYPE.encode()), (m.DLQ_REASON, reason.encode())]
    headers += [(m.DLQ_MESSAGE, b"detail"), (m.DLQ_OFFSET, str(n).encode())]
    if origin is not None:
        headers.append((m.DLQ_TOPIC, origin.encode()))
    return (f"patient-{n}".encode(), f"value-{n}".encode(), headers)


def test_redrive_sends_the_chosen_reasons_back_once(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    beats, dlq = topic_factory(partitions=2, prefix="beats"), topic_factory(partitions=2, prefix="dlq")
    produce_raw(
        kafka_bootstrap,
        dlq,
        [_dead_letter("oversized", beats, n) for n in range(3)]
        + [_dead_letter("invalid_json", beats, 3), _dead_letter("oversized", None, 4)],
    )
    command = ["redrive", "--bootstrap-servers", kafka_bootstrap, "--dlq", dlq, "--group", group_factory()]
    command += ["--reason", "oversized"]

    assert main([*command, "--dry-run"]) == 0
    assert "would re-send 3 dead letters (oversized 3)" in capsys.readouterr().err
    assert main(command) == 0
    assert f"re-sent 3 dead letters (oversized 3) to {beats}; skipped 2" in capsys.readouterr().err

    resent = sorted(read_topic(kafka_bootstrap, beats), key=lambda r: r.key)
    assert [(r.key, r.value) for r in resent] == [
        (f"patient-{n}".encode(), f"value-{n}".encode()) for n in range(3)
    ]
    for record in resent:  # the original headers stay, the dead-letter ones go
        assert record.headers == [(m.CONTENT_TYPE_HEADER, m.JSON_CONTENT_TYPE.encode())]

    # The group remembers: a second run sends only what arrived since.
    produce_raw(kafka_bootstrap, dlq, [_dead_letter("oversized", beats, 5)])
    assert main(command) == 0
    assert "re-sent 1 dead letters (oversized 1)" in capsys.readouterr().err
    assert len(read_topic(kafka_bootstrap, beats)) == 4


def test_redrive_commits_nothing_unless_every_record_is_acknowledged(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    dlq, beats = topic_factory(prefix="dlq"), topic_factory(prefix="beats")
    refusing = topic_factory(prefix="tiny", **{"max.message.bytes": "16"})  # every record is too large
    produce_raw(kafka_bootstrap, dlq, [_dead_letter("oversized", beats, n) for n in range(3)])
    command = ["redrive", "--bootstrap-servers", kafka_bootstrap, "--dlq", dlq, "--group", group_factory()]

    assert main([*command, "--to", refusing]) == 1
    error = capsys.readouterr().err
    assert "error: 3 of 3 records were not re-sent (" in error and "; nothing committed" in error
    # Nothing was committed: the next run, to a topic that takes them, sends all three.
    assert main(command) == 0
    assert f"re-sent 3 dead letters (oversized 3) to {beats}" in capsys.readouterr().err
    assert len(read_topic(kafka_bootstrap, beats)) == 3
