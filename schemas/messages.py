"""The message contracts on the Kafka topics: beats in, anomaly events, scores and dead letters out.

Producers of beats (the replay tool, devices) and readers of the outputs (the
``watch`` tool, alerting) import this module; the worker decodes beats with its
own fast path in ``worker/decode.py`` but uses the names and codes defined here.

Beats (topic ``ecg.beats``; the record key is the source id):

* JSON, ``content-type: application/json`` (also the default when the header
  is absent): an object with ``source_id`` (string), ``values`` (140 numbers),
  and optional ``beat_time`` (epoch milliseconds or ISO-8601 with offset; the
  record timestamp when absent), ``beat_id`` (string) and ``label``
  (``"normal"`` or ``"anomaly"``, ground truth for live evaluation). Schema:
  ``beat.schema.json``.
* Binary, ``content-type: application/x-ecg-beat-f32le``: exactly
  ``BEAT_LENGTH`` IEEE-754 float32 values, little-endian, no header, no
  padding (560 bytes). The source id is the record key (UTF-8), the beat time
  the record timestamp.

Outputs: the anomaly event (``anomaly_event.schema.json``), one score record
per beat (``score.schema.json``, optional topic), dead letters, and, when
episodes are on, one alert record per episode transition (``alert.schema.json``,
topic ``ecg.alerts``, key = source id; :func:`episode_id` names the episode).

Dead letter (topic ``ecg.beats.dlq``): the input record's key, value bytes,
headers and timestamp untouched, followed by these headers (UTF-8 text):
``ecg.dlq.reason`` (one :class:`DeadLetterReason` code), ``ecg.dlq.message``
(readable detail), ``ecg.dlq.topic``, ``ecg.dlq.partition``,
``ecg.dlq.offset``, ``ecg.dlq.timestamp`` (input coordinates and timestamp),
``ecg.dlq.consumer_group``, ``ecg.dlq.worker`` (client id) and
``ecg.dlq.failed_at`` (ISO-8601 UTC).

A *reduced* dead letter is written when the full one would be refused by the
dead-letter topic (its ``max.message.bytes``, or a record timestamp outside its
``message.timestamp.*.max.ms`` window): the same ``ecg.dlq.*`` headers plus
``ecg.dlq.reduced`` (why: ``size``, ``timestamp`` or both), ``ecg.dlq.key_bytes``
and ``ecg.dlq.value_bytes`` (the input's sizes) and ``ecg.dlq.truncated``
(what was cut: ``key``, ``value``, ``headers``, comma-separated, empty if
nothing); the value and key are cut to what fits, the input's own headers are
dropped if they do not fit, and the record timestamp is the time of failure.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import jsonschema
import numpy as np
import orjson

BEAT_LENGTH = 140

CONTENT_TYPE_HEADER = "content-type"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/x-ecg-beat-f32le"
EVENT_CONTENT_TYPE = "application/vnd.ecg-anomaly.event+json"
SCORE_CONTENT_TYPE = "application/vnd.ecg-anomaly.score+json"
ALERT_CONTENT_TYPE = "application/vnd.ecg-anomaly.alert+json"

# An alert record's ``kind`` (one record per transition of an episode) and a closed one's ``closed_reason``.
ALERT_KINDS = ("opened", "updated", "closed")
CLOSE_REASONS = ("recovered", "silent")

LABELS = ("normal", "anomaly")

# The latest beat time an output can carry as ISO-8601 (a four-digit year): 9999-12-31T23:59:59.999Z.
MAX_BEAT_TIME_MS = 253_402_300_799_999

# Dead-letter headers, added after the input record's own headers. The prefix
# follows Kafka Connect's ``__connect.errors.*`` idea with a project name.
DLQ_HEADER_PREFIX = "ecg.dlq."
DLQ_REASON = "ecg.dlq.reason"
DLQ_MESSAGE = "ecg.dlq.message"
DLQ_TOPIC = "ecg.dlq.topic"
DLQ_PARTITION = "ecg.dlq.partition"
DLQ_OFFSET = "ecg.dlq.offset"
DLQ_TIMESTAMP = "ecg.dlq.timestamp"
DLQ_CONSUMER_GROUP = "ecg.dlq.consumer_group"
DLQ_WORKER = "ecg.dlq.worker"
DLQ_FAILED_AT = "ecg.dlq.failed_at"
DLQ_REDUCED = "ecg.dlq.reduced"
DLQ_KEY_BYTES = "ecg.dlq.key_bytes"
DLQ_VALUE_BYTES = "ecg.dlq.value_bytes"
DLQ_TRUNCATED = "ecg.dlq.truncated"

# Namespace of the deterministic event ids (uuid5 of "topic/partition/offset").
EVENT_ID_NAMESPACE = uuid.UUID("6f1d2c52-3a5e-5b0e-9c36-6b8a3e0c4d21")
_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes
# Namespace of episode ids (uuid5 of "topic/partition/offset" of the beat that opened the episode).
EPISODE_ID_NAMESPACE = uuid.UUID("0b7e4a8e-29c4-5d7b-8f0e-3d5c1a6e9b42")

# Severity from ratio = score / threshold (anomaly means ratio > 1):
# low (1, 1.5], medium (1.5, 2.5], high (2.5, 4], critical above 4.
SEVERITY_BOUNDS = ((1.5, "low"), (2.5, "medium"), (4.0, "high"))
SEVERITIES = ("low", "medium", "high", "critical")
_SEVERITY_EDGES = np.array([bound for bound, _ in SEVERITY_BOUNDS])


class DeadLetterReason(StrEnum):
    """The closed set of dead-letter reason codes (``ecg.dlq.reason`` header); meanings below."""

    EMPTY_VALUE = "empty_value"
    OVERSIZED = "oversized"
    OVERSIZED_KEY = "oversized_key"
    UNKNOWN_CONTENT_TYPE = "unknown_content_type"
    UNDECODABLE_BYTES = "undecodable_bytes"
    INVALID_JSON = "invalid_json"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    WRONG_LENGTH = "wrong_length"
    NON_FINITE = "non_finite"
    MISSING_KEY = "missing_key"
    OUTPUT_TOO_LARGE = "output_too_large"


# What each reason means, for people (the documentation's reason table is generated from this).
REASON_MEANINGS: dict[DeadLetterReason, str] = {
    DeadLetterReason.EMPTY_VALUE: "a null (tombstone) or zero-length value",
    DeadLetterReason.OVERSIZED: "a value larger than `--max-record-bytes`",
    DeadLetterReason.OVERSIZED_KEY: "a record key longer than `--max-key-bytes`, or a JSON `source_id` "
    "longer than that in UTF-8 (it becomes the outputs' key)",
    DeadLetterReason.UNKNOWN_CONTENT_TYPE: "a `content-type` header that names neither beat format",
    DeadLetterReason.UNDECODABLE_BYTES: "a JSON beat that is not UTF-8, or a binary beat whose key is not",
    DeadLetterReason.INVALID_JSON: "UTF-8 but not JSON (`NaN` literals, a lone surrogate escape and a byte "
    "order mark included)",
    DeadLetterReason.MISSING_FIELD: "`source_id` or `values` absent",
    DeadLetterReason.WRONG_TYPE: "a field of the wrong type, `null`, or a value outside its allowed set "
    "(non-numbers in `values`, `label` not `normal`/`anomaly`, a `beat_time` that is neither integer epoch "
    "ms nor an RFC 3339 date-time with an offset, or outside 1970 to 9999; a record timestamp outside that "
    "range standing in for an absent `beat_time`)",
    DeadLetterReason.WRONG_LENGTH: f"not {BEAT_LENGTH} values (JSON) or not {4 * BEAT_LENGTH} bytes (binary)",
    DeadLetterReason.NON_FINITE: "NaN, infinity, or a number outside the float32 range (`1e39`, `1e400`); "
    "or a beat so far outside the training data that the model's score is not finite",
    DeadLetterReason.MISSING_KEY: "a binary beat without a record key (its source id)",
    DeadLetterReason.OUTPUT_TOO_LARGE: "its anomaly event or score record would be larger than that topic "
    "accepts (`max.message.bytes`, or `--max-output-bytes`)",
}


DEAD_LETTER_REASONS: tuple[str, ...] = tuple(r.value for r in DeadLetterReason)


def event_id(topic: str, partition: int, offset: int) -> str:
    """The anomaly event id: a UUIDv5 of the input coordinates, so a re-processed beat keeps its id.

    Equal to ``str(uuid.uuid5(EVENT_ID_NAMESPACE, "topic/partition/offset"))`` (tested).
    """
    return event_ids([(topic, partition, offset)])[0]


def event_ids(inputs: Sequence[tuple[str, int, int]]) -> list[str]:
    """:func:`event_id` of many (topic, partition, offset) at once, without a ``UUID`` object each.

    Formatting the text in numpy instead was faster only for hundreds of ids at once
    and cost ~40 us for one: a live feed's batches are a few beats.
    """
    prefixes = {topic: event_id_prefix(topic) for topic in {i[0] for i in inputs}}
    sha1, variant, ids = hashlib.sha1, _VARIANT_DIGIT, []
    for topic, partition, offset in inputs:
        h = sha1(prefixes[topic] + b"%d/%d" % (partition, offset)).hexdigest()
        # version 5 in the 13th hex digit, the RFC 4122 variant (binary 10xx) in the 17th
        ids.append(f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:32]}")
    return ids


@cache
def event_id_prefix(topic: str) -> bytes:
    """What the UUIDv5 of an input on ``topic`` hashes before its ``partition/offset``."""
    return _NAMESPACE_BYTES + topic.encode() + b"/"


_VARIANT_DIGIT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def episode_id(topic: str, partition: int, offset: int) -> str:
    """An episode's id: a UUIDv5 of the input coordinates of the beat that opened it (deterministic)."""
    return str(uuid.uuid5(EPISODE_ID_NAMESPACE, f"{topic}/{partition}/{offset}"))


def severity(score: float, threshold: float) -> str:
    return ratio_severity(score / threshold)


def ratio_severity(ratio: float) -> str:
    """The severity of ``ratio`` = score / threshold (see :data:`SEVERITY_BOUNDS`)."""
    for bound, name in SEVERITY_BOUNDS:
        if ratio <= bound:
            return name
    return "critical"


def severity_bands(ratios: np.ndarray) -> np.ndarray:
    """Each ``score / threshold`` ratio's index into :data:`SEVERITIES`: :func:`severity` of many at once
    (the worker's batches)."""
    return np.searchsorted(_SEVERITY_EDGES, ratios, side="left")


def iso_time(epoch_ms: int) -> str:
    """Epoch milliseconds → ``2026-11-23T18:00:00.123Z`` (0 to :data:`MAX_BEAT_TIME_MS`)."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_iso_second(seconds)}.{millis:03d}Z"


@lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    """Cached: a live feed's beat and detection times fall in the same few seconds, batch after batch."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def beat_time_ms(beat_time: Any) -> int | None:
    """Epoch milliseconds of an acceptable ``beat_time``, or None: the one definition of that field.

    Acceptable: an integer number of epoch milliseconds (JSON's ``1000.0`` is an integer too, as JSON
    Schema counts it), or an RFC 3339 date-time (``T`` and ``Z`` in either case, a UTC offset
    required), from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z (:data:`MAX_BEAT_TIME_MS`): an
    event's ISO-8601 time has a four-digit year. The decoder and the schema's ``date-time`` format
    (:data:`BEAT_FORMATS`) both use it.
    """
    ms: int | None = None
    if type(beat_time) is int:
        ms = beat_time
    elif type(beat_time) is float and beat_time.is_integer():
        ms = int(beat_time)
    elif type(beat_time) is str:
        text = beat_time.upper()
        if _RFC3339.fullmatch(text) is not None:
            try:
                ms = int(datetime.fromisoformat(text).timestamp() * 1000)
            except ValueError:  # e.g. 2026-02-30, or 24:00
                ms = None
    if ms is not None and 0 <= ms <= MAX_BEAT_TIME_MS:
        return ms
    return None


def _date_time(value: object) -> bool:
    return not isinstance(value, str) or beat_time_ms(value) is not None


# The beat schema's ``format: date-time``, as the worker applies it (JSON Schema leaves formats to the
# validator; this one is RFC 3339 within the range an event can carry).
BEAT_FORMATS = jsonschema.FormatChecker(formats=())
BEAT_FORMATS.checks("date-time")(_date_time)


def validate_beat(beat: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``beat`` (parsed JSON) is a beat the worker scores.

    For producers who want to check a beat before sending it. The worker also bounds the record's
    size (``--max-record-bytes``) and key (``--max-key-bytes``), which no schema can say.
    """
    jsonschema.validate(beat, beat_schema(), format_checker=BEAT_FORMATS)


def encode_beat_json(
    source_id: str,
    values: Sequence[float] | np.ndarray,
    beat_time: int | str | datetime | None = None,
    beat_id: str | None = None,
    label: str | None = None,
) -> bytes:
    """A JSON beat. ``beat_time``: epoch ms, an ISO-8601 string, or an aware datetime."""
    if label is not None and label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    beat: dict[str, Any] = {"source_id": source_id, "values": [float(v) for v in values]}
    if isinstance(beat_time, datetime):
        beat_time = int(beat_time.timestamp() * 1000)
    if beat_time is not None:
        beat["beat_time"] = beat_time
    if beat_id is not None:
        beat["beat_id"] = beat_id
    if label is not None:
        beat["label"] = label
    return orjson.dumps(beat)


def encode_beat_binary(values: Sequence[float] | np.ndarray) -> bytes:
    """A binary beat: ``BEAT_LENGTH`` little-endian float32 values."""
    array = np.asarray(values, dtype="<f4")
    if array.shape != (BEAT_LENGTH,):
        raise ValueError(f"a beat has {BEAT_LENGTH} values, got shape {array.shape}")
    return array.tobytes()


def beat_headers(content_type: str = JSON_CONTENT_TYPE) -> list[tuple[str, bytes]]:
    """Record headers for a beat of the given content type."""
    return [(CONTENT_TYPE_HEADER, content_type.encode())]


def decode_event(value: bytes) -> dict[str, Any]:
    """An anomaly event or score record's bytes → dict (no validation; see :func:`validate_event`)."""
    return orjson.loads(value)


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    """The last value of header ``name`` as text, or None."""
    found = None
    for key, value in headers or ():
        if key == name:
            found = value.decode("utf-8", "replace")
    return found


@cache
def _schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("ecg_anomaly.schemas").joinpath(name).read_text())


def beat_schema() -> dict[str, Any]:
    return _schema("beat.schema.json")


def anomaly_event_schema() -> dict[str, Any]:
    return _schema("anomaly_event.schema.json")


def score_schema() -> dict[str, Any]:
    return _schema("score.schema.json")


def alert_schema() -> dict[str, Any]:
    return _schema("alert.schema.json")


def validate_alert(alert: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``alert`` is a valid alert record."""
    jsonschema.validate(alert, alert_schema(), format_checker=jsonschema.FormatChecker())


def validate_event(event: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``event`` is a valid anomaly event."""
    jsonschema.validate(event, anomaly_event_schema(), format_checker=jsonschema.FormatChecker())
