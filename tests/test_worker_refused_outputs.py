"""No record stalls a partition: outputs and dead letters the broker would refuse, against a real broker.

Each case once per guarantee. A case feeds good beats around the records that used to crash-loop the
worker (a large key, a value over 4 MiB, a timestamp the dead-letter topic refuses) and checks that
the partition moved on (everything committed), each bad record is in the dead-letter topic (whole,
or reduced with its headers), the good beats are scored, the counts balance, and the worker is alive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from ecg_anomaly.schemas import messages as m
from tests.support.artifact import load_test_split
from tests.support.chaos_checker import committed_offsets
from tests.support.poison import FUTURE_TOPIC_AFTER_MS, LARGE_TOPIC_BYTES, POISON
from tests.support.worker import WorkerProcess, produce_raw, read_topic, wait_for

pytestmark = pytest.mark.kafka

GUARANTEES = ["at-least-once", "exactly-once"]
PERMISSIVE_INPUT = {
    "max.message.bytes": str(LARGE_TOPIC_BYTES),
    "message.timestamp.after.max.ms": str(FUTURE_TOPIC_AFTER_MS),
}
_BY_NAME = {p.name: p for p in POISON}


def _option(worker: WorkerProcess, name: str) -> str:
    return worker.args[worker.args.index("--" + name.replace("_", "-")) + 1]


def _feed(names: list[str]) -> tuple[list[tuple[Any, ...]], dict[int, str]]:
    """Good beats around each named poison record: the records, and offset → poison name."""
    beats, _ = load_test_split()
    now = int(time.time() * 1000)
    records: list[tuple[Any, ...]] = []
    bad: dict[int, str] = {}
    for i, name in enumerate(names):
        records.append((b"s1", m.encode_beat_json("s1", beats[i], beat_id=f"g{i}"), m.beat_headers(), None))
        poison = _BY_NAME[name]
        bad[len(records)] = name
        stamp = None if poison.stamp is None else poison.stamp(now)
        records.append((poison.key, poison.value, [*poison.headers, ("trace", name.encode())], stamp))
    records.append((b"s1", m.encode_beat_json("s1", beats[99], beat_id="last"), m.beat_headers(), None))
    return records, bad


def _run(
    kafka_bootstrap: str,
    worker: WorkerProcess,
    names: list[str],
) -> tuple[dict[int, Any], list[Any], Any]:
    """Feed, wait until every offset is committed; the dead letters by input offset, inputs, scores."""
    topic = _option(worker, "input_topic")
    records, bad = _feed(names)
    produce_raw(kafka_bootstrap, topic, records, max_request_size=LARGE_TOPIC_BYTES)
    group = _option(worker, "group_id")

    def done() -> bool:
        committed, ends = committed_offsets(kafka_bootstrap, group, topic)
        return committed == ends == {0: len(records)}

    wait_for(done, 180, "every input offset committed", interval=0.5)
    assert worker.proc is not None and worker.proc.poll() is None, worker.log()  # never exited
    eos = _option(worker, "guarantee") == "exactly-once"
    dead = read_topic(kafka_bootstrap, _option(worker, "dlq_topic"), committed_only=eos, idle=1.0)
    scored = read_topic(kafka_bootstrap, _option(worker, "scores_topic"), committed_only=eos, idle=1.0)
    inputs = read_topic(kafka_bootstrap, topic, idle=1.0)
    by_offset = {int(dict(r.headers)[m.DLQ_OFFSET]): r for r in dead}
    assert sorted(by_offset) == sorted(bad) and len(dead) == len(bad)  # each once
    assert {orjson.loads(s.value)["beat_id"] for s in scored} == {f"g{i}" for i in range(len(names))} | {
        "last"
    }
    metrics = worker.metrics()
    dead_total = sum(v for k, v in metrics.items() if k.startswith("ecg_dead_letters_total{"))
    scored_total = sum(metrics[f'ecg_beats_scored_total{{outcome="{o}"}}'] for o in ("normal", "anomaly"))
    assert metrics["ecg_beats_consumed_total"] == len(records) == scored_total + dead_total
    assert dead_total == len(bad)
    return by_offset, inputs, metrics


def _assert_whole(dead: Any, original: Any, reason: str) -> None:
    h = dict(dead.headers)
    assert h[m.DLQ_REASON].decode() == reason, h[m.DLQ_MESSAGE]
    assert (dead.key, dead.value, dead.timestamp) == (original.key, original.value, original.timestamp)
    assert dead.headers[: len(original.headers)] == original.headers
    assert m.DLQ_REDUCED not in h


def _assert_reduced(dead: Any, original: Any, reason: str, cause: str, limit: int) -> None:
    h = dict(dead.headers)
    assert h[m.DLQ_REASON].decode() == reason
    assert h[m.DLQ_REDUCED].decode() == cause
    assert int(h[m.DLQ_VALUE_BYTES]) == len(original.value or b"")
    assert int(h[m.DLQ_KEY_BYTES]) == len(original.key or b"")
    assert int(h[m.DLQ_TIMESTAMP]) == original.timestamp and int(h[m.DLQ_OFFSET]) == original.offset
    assert original.value.startswith(dead.value)  # cut, never altered
    assert ("value" in h[m.DLQ_TRUNCATED].decode()) == (len(dead.value) < len(original.value))
    assert len(dead.value) + len(dead.key or b"") < limit
    assert abs(dead.timestamp - time.time() * 1000) < 600_000  # stamped at the time of failure


@pytest.fixture
def start(kafka_bootstrap: str, small_model: Path, topic_factory: Callable[..., str], worker_factory):
    def make(guarantee: str, input_config: dict[str, str] | None = None, **options: object) -> WorkerProcess:
        topic = topic_factory(partitions=1, prefix="beats", **(input_config or {}))
        worker = worker_factory(small_model, topic=topic, partitions=1, guarantee=guarantee, **options)
        worker.wait_ready()
        return worker

    return make


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_large_keys_at_the_default_topic_configs(kafka_bootstrap: str, start, guarantee: str) -> None:
    worker = start(guarantee)
    names = ["binary, 100 kB key", "binary, 600 kB key", "json, 600 kB key"]
    dead, inputs, _ = _run(kafka_bootstrap, worker, names)
    for offset, letter in dead.items():
        _assert_whole(letter, inputs[offset], "oversized_key")


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_an_output_the_topic_would_refuse_dead_letters_its_input(
    kafka_bootstrap: str, start, guarantee: str
) -> None:
    """Keys allowed up to 2 MB: a 600 kB key makes a 1.2 MB score record, over the topic's 1 MB."""
    worker = start(guarantee, max_key_bytes=2_000_000)
    dead, inputs, _ = _run(kafka_bootstrap, worker, ["binary, 600 kB key"])
    ((offset, letter),) = dead.items()
    _assert_whole(letter, inputs[offset], "output_too_large")
    message = dict(letter.headers)[m.DLQ_MESSAGE].decode()
    topics = (_option(worker, "scores_topic"), _option(worker, "anomaly_topic"))  # the beat may be flagged
    assert "would be 1,2" in message and any(f"what {t} accepts" in message for t in topics), message


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_values_over_4_mib_and_timestamps_the_dead_letter_topic_refuses(
    kafka_bootstrap: str, start, topic_factory: Callable[..., str], guarantee: str
) -> None:
    """Input and dead-letter topics take 8 MB: the producer follows them. The DLQ keeps its default
    timestamp window: a dead letter two days ahead is reduced; one from 1970 is kept whole."""
    dlq = topic_factory(partitions=1, prefix="dlq", **{"max.message.bytes": str(LARGE_TOPIC_BYTES)})
    worker = start(guarantee, PERMISSIVE_INPUT, dlq_topic=dlq)
    names = ["4.1 MB value", "4.2 MB value", "5 MB value", "two days ahead", "1970"]
    dead, inputs, metrics = _run(kafka_bootstrap, worker, names)
    for offset, letter in dead.items():
        name = dict(letter.headers)["trace"].decode()
        if name == "two days ahead":
            _assert_reduced(letter, inputs[offset], "invalid_json", "timestamp", LARGE_TOPIC_BYTES)
            assert letter.value == inputs[offset].value  # only the timestamp had to change
        else:
            _assert_whole(letter, inputs[offset], _BY_NAME[name].reason)
    assert metrics['ecg_dead_letters_reduced_total{cause="timestamp"}'] == 1


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_dead_letter_too_large_for_its_topic_is_written_reduced(
    kafka_bootstrap: str, start, guarantee: str
) -> None:
    worker = start(guarantee, PERMISSIVE_INPUT)  # the dead-letter topic at the broker's defaults (1 MB)
    dead, inputs, metrics = _run(kafka_bootstrap, worker, ["5 MB value", "4.1 MB value"])
    for offset, letter in dead.items():
        _assert_reduced(letter, inputs[offset], "oversized", "size", 1_048_588)
        assert len(letter.value) > 1_000_000  # cut to what fits, not to nothing
        assert ("trace", dict(letter.headers)["trace"]) in letter.headers  # the input's headers fit
    assert metrics['ecg_dead_letters_reduced_total{cause="size"}'] == 2


def test_a_dead_letter_topic_too_small_for_anything_stops_the_worker_and_commits_nothing(
    kafka_bootstrap: str, start, topic_factory: Callable[..., str]
) -> None:
    """The last resort: not even a reduced dead letter fits, so the batch fails, and after 5 tries
    the worker exits naming the topic; nothing past the bad record is committed."""
    dlq = topic_factory(partitions=1, prefix="dlq", **{"max.message.bytes": "300"})
    worker = start("at-least-once", dlq_topic=dlq)
    topic = _option(worker, "input_topic")
    beats, _ = load_test_split()
    good = m.encode_beat_json("s1", np.asarray(beats[0]))
    produce_raw(
        kafka_bootstrap, topic, [(b"s1", good, m.beat_headers()), (b"s1", b"not json", m.beat_headers())]
    )
    assert worker.wait(timeout=120) == 1
    log = worker.log()
    assert "a dead letter cannot be written" in log and dlq in log and "accepts records of at most 300" in log
    committed, _ = committed_offsets(kafka_bootstrap, _option(worker, "group_id"), topic)
    assert committed.get(0, 0) <= 1  # the good beat before it at most
