"""The beat contract: the JSON Schema and the decoder accept the same documents; outputs fit their topics."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker.dead_letters import DeadLetters, Unpublishable
from ecg_anomaly.worker.decode import BeatDecoder, Reject
from ecg_anomaly.worker.model import Scores
from ecg_anomaly.worker.outputs import OutputBuilder
from ecg_anomaly.worker.records import Record, Records
from ecg_anomaly.worker.topic_limits import (
    KAFKA_MAX_MESSAGE_BYTES,
    OutputLimits,
    TopicLimits,
    from_configs,
    record_bytes,
)
from tests.support.poison import GOOD, JSON_CONTENT_TYPES, POISON, VALID_JSON, Poison

# Reasons about the record rather than the document: a schema cannot say them.
TRANSPORT = {
    "empty_value",
    "oversized",
    "oversized_key",
    "unknown_content_type",
    "missing_key",
    "undecodable_bytes",
}
JSON_POISON = [p for p in POISON if p.headers == m.beat_headers() and p.reason not in TRANSPORT]


def Rec(
    value: bytes | None,
    key: bytes | None = b"k",
    headers: list[tuple[str, bytes]] | None = None,
    offset: int = 0,
    timestamp: int = 1_700_000_000_000,
) -> Record:
    return Record("beats", 0, offset, timestamp, key, value, m.beat_headers() if headers is None else headers)


def _schema_accepts(value: bytes) -> bool:
    """The reference: RFC 8259 JSON without what RFC 7493 forbids (lone surrogates), then the schema."""

    def constant(name: str) -> None:
        raise ValueError(name)

    try:
        document = json.loads(value.decode("utf-8"), parse_constant=constant)
    except (ValueError, UnicodeDecodeError):
        return False
    # json turns a valid escaped pair into one code point; a lone escape stays a surrogate
    if any("\ud800" <= c <= "\udfff" for c in json.dumps(document, ensure_ascii=False)):
        return False
    try:
        m.validate_beat(document)
    except jsonschema.ValidationError:
        return False
    return True


def _decoder_reason(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> str | None:
    batch = BeatDecoder(m.BEAT_LENGTH, 65536, 1024).decode(Records.of([Rec(value, headers=headers)]))
    return batch.rejects[0].reason.value if batch.rejects else None


CASES = [(p.name, p.value, p.reason) for p in JSON_POISON] + [
    (name, value, None) for name, value in VALID_JSON
]


@pytest.mark.parametrize(("name", "value", "reason"), CASES, ids=[c[0] for c in CASES])
def test_the_schema_and_the_decoder_accept_the_same_beats(
    name: str, value: bytes, reason: str | None
) -> None:
    assert _decoder_reason(value) == reason
    assert _schema_accepts(value) == (reason is None)


def test_the_case_table_covers_every_document_reason() -> None:
    document_reasons = set(m.DEAD_LETTER_REASONS) - TRANSPORT - {"output_too_large"}
    assert {p.reason for p in JSON_POISON} == document_reasons


@pytest.mark.parametrize("content_type", JSON_CONTENT_TYPES)
def test_content_types_follow_media_type_rules(content_type: bytes) -> None:
    good = m.encode_beat_json("s", GOOD)
    assert _decoder_reason(good, [("content-type", content_type)]) is None
    assert _decoder_reason(good, [("Content-Type", content_type)]) is None
    binary = m.encode_beat_binary(np.zeros(m.BEAT_LENGTH))
    assert _decoder_reason(binary, [("content-type", b"application/x-ecg-beat-f32le; v=1")]) is None
    assert _decoder_reason(good, [("content-type", b"application/jsonx")]) == "unknown_content_type"


def test_the_first_content_type_header_decides() -> None:
    good = m.encode_beat_json("s", GOOD)
    headers = [("content-type", b"text/plain"), ("content-type", b"application/json")]
    assert _decoder_reason(good, headers) == "unknown_content_type"


# --- limits and dead letters ----------------------------------------------------------------------


def test_topic_limits_come_from_the_topic_configs() -> None:
    limits = from_configs(
        {
            "max.message.bytes": "8388608",
            "message.timestamp.type": "CreateTime",
            "message.timestamp.after.max.ms": "1000",
            "message.timestamp.before.max.ms": "86400000",
        }
    )
    now = 1_800_000_000_000
    assert limits.known and limits.fits(8_388_608) and not limits.fits(8_388_609)
    assert limits.accepts_timestamp(now, now) and limits.accepts_timestamp(0, now)  # 0: stamped on send
    assert not limits.accepts_timestamp(now + 61_000, now)  # a minute's margin for the broker's clock
    assert not limits.accepts_timestamp(now - 86_400_000, now)
    assert from_configs({"message.timestamp.type": "LogAppendTime"}).accepts_timestamp(now * 2, now)
    default = TopicLimits()
    assert not default.known and default.max_message_bytes == KAFKA_MAX_MESSAGE_BYTES
    assert default.accepts_timestamp(1, now)  # no limit into the past by default
    assert not default.accepts_timestamp(now + 3_600_000, now)


def test_the_producer_follows_the_largest_and_batches_under_the_smallest_limit() -> None:
    configs = {"a": {"max.message.bytes": "8388608"}, "b": {"max.message.bytes": "200000"}, "c": None}
    limits = OutputLimits(["a", "b", "c"], lambda topics, timeout: configs)
    assert limits.refresh() is True and limits.refresh() is False
    bounds = limits.producer_bounds()
    assert bounds.message_max_bytes == 8_388_608
    assert bounds.batch_size < 200_000
    assert limits["c"] == TopicLimits()  # unreadable: Kafka's defaults assumed
    capped = OutputLimits(["a"], lambda topics, timeout: configs, cap=100_000)
    capped.refresh()
    assert capped["a"].max_message_bytes == 100_000


def test_a_failed_read_keeps_what_was_known() -> None:
    answers = [{"a": {"max.message.bytes": "8388608"}}, {"a": None}]
    limits = OutputLimits(["a"], lambda topics, timeout: answers.pop(0))
    limits.refresh()
    limits.refresh()
    assert limits["a"].max_message_bytes == 8_388_608


def _reject(value: bytes, key: bytes = b"k", timestamp: int = 1_700_000_000_000) -> Reject:
    record = Rec(value, key=key, headers=[("trace", b"t1")], offset=41, timestamp=timestamp)
    return Reject(record, m.DeadLetterReason.OVERSIZED, "value is too large")


def _headers(record: object) -> dict[str, bytes]:
    return dict(record.headers)  # type: ignore[attr-defined]


def test_a_dead_letter_that_fits_is_the_input_untouched() -> None:
    letters = DeadLetters("dlq", "g", "w")
    record, why = letters.build(_reject(b"v" * 1000), TopicLimits(), now_ms=1_700_000_000_500)
    assert why is None
    assert (record.key, record.value, record.timestamp_ms) == (b"k", b"v" * 1000, 1_700_000_000_000)
    assert record.headers[0] == ("trace", b"t1") and m.DLQ_REDUCED not in _headers(record)


def test_a_dead_letter_too_large_for_its_topic_is_reduced_to_fit() -> None:
    letters = DeadLetters("dlq", "g", "w")
    limits = TopicLimits(max_message_bytes=5000)
    now = 1_700_000_100_000
    record, why = letters.build(_reject(b"v" * 100_000, key=b"k" * 50_000), limits, now)
    assert why == "size"
    assert record_bytes(record.key, record.value, record.headers) <= 5000
    h = _headers(record)
    assert h[m.DLQ_REDUCED] == b"size" and h[m.DLQ_TRUNCATED] == b"key,value"
    assert (h[m.DLQ_KEY_BYTES], h[m.DLQ_VALUE_BYTES]) == (b"50000", b"100000")
    assert (
        h[m.DLQ_OFFSET] == b"41"
        and h[m.DLQ_TIMESTAMP] == b"1700000000000"
        and h[m.DLQ_REASON] == b"oversized"
    )
    assert record.timestamp_ms == now and record.value == b"v" * len(record.value) and record.value
    assert record.key == b"k" * len(record.key) and 0 < len(record.key) < 50_000
    assert ("trace", b"t1") in record.headers  # the input's headers fit, so they stay


def test_a_dead_letter_from_the_future_is_stamped_now() -> None:
    letters = DeadLetters("dlq", "g", "w")
    now = 1_700_000_000_000
    record, why = letters.build(_reject(b"bad", timestamp=now + 2 * 86_400_000), TopicLimits(), now)
    assert why == "timestamp" and record.timestamp_ms == now
    h = _headers(record)
    assert h[m.DLQ_TIMESTAMP] == str(now + 2 * 86_400_000).encode()
    assert record.value == b"bad" and h[m.DLQ_TRUNCATED] == b""


def test_a_topic_too_small_for_any_dead_letter_is_unpublishable() -> None:
    with pytest.raises(Unpublishable, match="accepts records of at most 300 bytes"):
        DeadLetters("dlq", "g", "w").build(_reject(b"v" * 1000), TopicLimits(max_message_bytes=300), 0)


def test_a_beat_whose_event_would_not_fit_is_dead_lettered_instead() -> None:
    configs = {"anomalies": {"max.message.bytes": "2000"}, "scores": {"max.message.bytes": "1048588"}}
    limits = OutputLimits(["anomalies", "scores", "dlq"], lambda topics, timeout: configs)
    limits.refresh()
    big = Rec(m.encode_beat_json("s", GOOD, beat_id="b" * 3000), offset=1)
    small = Rec(m.encode_beat_json("s", GOOD, beat_id="b1"), offset=2)
    batch = BeatDecoder(m.BEAT_LENGTH, 65536, 1024).decode(Records.of([big, small]))
    scores = Scores(np.array([0.9, 0.9], dtype=np.float32), np.full((2, m.BEAT_LENGTH), 0.1, np.float32))
    out = OutputBuilder("anomalies", "scores", "dlq", "g", "w", limits).build(batch, scores, 0.5, "v1")
    assert out.batch.rows == [1] and out.anomaly.tolist() == [True]
    assert [(r.record, r.reason.value) for r in out.batch.rejects] == [(big, "output_too_large")]
    message = out.batch.rejects[0].message
    assert "anomaly event would be" in message and "anomalies" in message
    topics = sorted(r.topic for r in out.records)
    assert topics == [
        "anomalies",
        "dlq",
        "scores",
    ]  # the small beat's event and score, the big one's dead letter
    dead = next(r for r in out.records if r.topic == "dlq")
    assert dead.value == big.value and _headers(dead)[m.DLQ_REASON] == b"output_too_large"


def test_poison_names_are_unique() -> None:
    names = [p.name for p in POISON]
    assert len(names) == len(set(names))
    assert all(isinstance(p, Poison) for p in POISON)
