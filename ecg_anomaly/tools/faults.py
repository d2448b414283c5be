"""Malformed input records for fault injection (``ecg-anomaly replay --bad-rate``).

Each kind is named after the documented dead-letter reason
(:class:`~schemas.messages.DeadLetterReason`) that a worker with default
settings must give it, and the record carries that expectation in the
``ecg.replay.fault`` header. Dead letters keep the input's headers, so whoever
reads the dead-letter topic (``ecg-anomaly watch --dlq``, the tests) can check
the worker's verdict against the intended one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

from ecg_anomaly.schemas.messages import (
    BINARY_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    DeadLetterReason,
    beat_headers,
    encode_beat_binary,
    encode_beat_json,
)

FAULT_HEADER = "ecg.replay.fault"

# More than the worker's default --max-record-bytes (65536); a worker configured with
# a larger limit scores this record as a valid beat (its extra field is allowed).
OVERSIZED_BYTES = 70_000


@dataclass(frozen=True)
class BadRecord:
    reason: DeadLetterReason  # what the worker is expected to dead-letter it as
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _json_beat(source: str, values: np.ndarray) -> bytes:
    return encode_beat_json(source, values)


def _empty(source: str, values: np.ndarray) -> bytes:
    return b""


def _oversized(source: str, values: np.ndarray) -> bytes:
    beat = orjson.loads(_json_beat(source, values))
    beat["padding"] = "x" * OVERSIZED_BYTES
    return orjson.dumps(beat)


def _undecodable(source: str, values: np.ndarray) -> bytes:
    return b'{"source_id": "' + source.encode() + b'", "values": [\xff\xfe\xfd]}'


def _invalid_json(source: str, values: np.ndarray) -> bytes:
    whole = _json_beat(source, values)
    return whole[: len(whole) // 2]  # cut mid-array, as a producer crashing mid-write would


def _missing_field(source: str, values: np.ndarray) -> bytes:
    return orjson.dumps({"source_id": source, "samples": [float(v) for v in values]})


def _wrong_type(source: str, values: np.ndarray) -> bytes:
    return orjson.dumps({"source_id": source, "values": " ".join(f"{v:.4f}" for v in values)})


def _wrong_length(source: str, values: np.ndarray) -> bytes:
    return _json_beat(source, values[: len(values) - 12])


def _non_finite(source: str, values: np.ndarray) -> bytes:
    broken = values.astype(np.float32)
    broken[len(broken) // 3] = np.nan  # a dropped sample from a device
    return encode_beat_binary(broken)


def _unknown_content_type(source: str, values: np.ndarray) -> bytes:
    return ",".join(f"{v:.4f}" for v in values).encode()


def _missing_key(source: str, values: np.ndarray) -> bytes:
    return encode_beat_binary(values)


OVERSIZED_KEY_BYTES = 2048  # more than the worker's default --max-key-bytes (1024)


# reason → (value builder, content type, whether the record has a key). Every reason a worker with
# default options can give an input record; not output_too_large, which needs a smaller output topic.
_KINDS: dict[DeadLetterReason, tuple[Callable[[str, np.ndarray], bytes], str, bool]] = {
    DeadLetterReason.EMPTY_VALUE: (_empty, JSON_CONTENT_TYPE, True),
    DeadLetterReason.OVERSIZED: (_oversized, JSON_CONTENT_TYPE, True),
    DeadLetterReason.OVERSIZED_KEY: (_missing_key, BINARY_CONTENT_TYPE, True),
    DeadLetterReason.UNKNOWN_CONTENT_TYPE: (_unknown_content_type, "text/csv", True),
    DeadLetterReason.UNDECODABLE_BYTES: (_undecodable, JSON_CONTENT_TYPE, True),
    DeadLetterReason.INVALID_JSON: (_invalid_json, JSON_CONTENT_TYPE, True),
    DeadLetterReason.MISSING_FIELD: (_missing_field, JSON_CONTENT_TYPE, True),
    DeadLetterReason.WRONG_TYPE: (_wrong_type, JSON_CONTENT_TYPE, True),
    DeadLetterReason.WRONG_LENGTH: (_wrong_length, JSON_CONTENT_TYPE, True),
    DeadLetterReason.NON_FINITE: (_non_finite, BINARY_CONTENT_TYPE, True),
    DeadLetterReason.MISSING_KEY: (_missing_key, BINARY_CONTENT_TYPE, False),
}
FAULT_KINDS: tuple[str, ...] = tuple(reason.value for reason in _KINDS)


def bad_record(reason: DeadLetterReason, source: str, values: np.ndarray) -> BadRecord:
    """A record the worker must dead-letter with ``reason``, made from a real beat of ``source``."""
    build, content_type, keyed = _KINDS[reason]
    headers = [*beat_headers(content_type), (FAULT_HEADER, reason.value.encode())]
    key = source.encode() if keyed else None
    if reason is DeadLetterReason.OVERSIZED_KEY:
        key = (source + "/" + "x" * OVERSIZED_KEY_BYTES).encode()
    return BadRecord(reason, key, build(source, values), headers)


class FaultInjector:
    """Decides, beat by beat, whether a malformed record follows it (seeded, so runs repeat)."""

    def __init__(self, rate: float, kinds: tuple[str, ...] = FAULT_KINDS, seed: int = 0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"bad rate must be in [0, 1], got {rate}")
        unknown = sorted(set(kinds) - set(FAULT_KINDS))
        if unknown or not kinds:
            raise ValueError(f"unknown fault kind(s) {unknown}; choose from {', '.join(FAULT_KINDS)}")
        self.rate = rate
        self.kinds = tuple(DeadLetterReason(k) for k in kinds)
        self._rng = random.Random(seed)

    def after_beat(self, source: str, values: np.ndarray) -> BadRecord | None:
        if self.rate == 0.0 or self._rng.random() >= self.rate:
            return None
        return bad_record(self._rng.choice(self.kinds), source, values)
