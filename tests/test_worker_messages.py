"""The message contract helpers the replay tool and the worker share."""

from __future__ import annotations

import uuid

import jsonschema
import numpy as np
import orjson
import pytest

from ecg_anomaly.schemas import messages as m


def test_json_beat_round_trips_and_validates() -> None:
    values = np.linspace(-1, 1, m.BEAT_LENGTH, dtype=np.float32)
    raw = m.encode_beat_json("patient-1", values, beat_time=1_700_000_000_000, beat_id="b1", label="anomaly")
    beat = orjson.loads(raw)
    jsonschema.validate(beat, m.beat_schema())
    assert np.array_equal(np.asarray(beat["values"], dtype=np.float32), values)
    assert (beat["source_id"], beat["beat_time"], beat["beat_id"], beat["label"]) == (
        "patient-1",
        1_700_000_000_000,
        "b1",
        "anomaly",
    )


def test_json_beat_rejects_unknown_label() -> None:
    with pytest.raises(ValueError, match="label"):
        m.encode_beat_json("p", [0.0] * m.BEAT_LENGTH, label="maybe")


def test_binary_beat_is_little_endian_float32() -> None:
    values = np.arange(m.BEAT_LENGTH, dtype=np.float32) / 7
    raw = m.encode_beat_binary(values)
    assert len(raw) == 4 * m.BEAT_LENGTH
    assert np.array_equal(np.frombuffer(raw, dtype="<f4"), values)
    with pytest.raises(ValueError, match="140"):
        m.encode_beat_binary(values[:-1])


def test_event_id_is_deterministic_per_input_coordinate() -> None:
    assert m.event_id("ecg.beats", 0, 5) == m.event_id("ecg.beats", 0, 5)
    coordinates = [("ecg.beats", 0, 5), ("t", 11, 2**40), ("bëats/ünicode", 3, 0)]
    coordinates += [("ecg.beats", 7, offset) for offset in range(2000)]  # every variant digit
    expected = [str(uuid.uuid5(m.EVENT_ID_NAMESPACE, f"{t}/{p}/{o}")) for t, p, o in coordinates]
    assert m.event_ids(coordinates) == expected  # one batch, several topics
    assert [m.event_id(*c) for c in coordinates[:50]] == expected[:50]
    assert m.event_ids([]) == []
    assert len({m.event_id("ecg.beats", p, o) for p in range(3) for o in range(100)}) == 300


@pytest.mark.parametrize(
    ("score", "expected"), [(1.01, "low"), (1.5, "low"), (2.0, "medium"), (3.0, "high"), (4.5, "critical")]
)
def test_severity_bands(score: float, expected: str) -> None:
    assert m.severity(score, 1.0) == expected
    bands = m.severity_bands(np.array([score, score * 2])).tolist()
    assert [m.SEVERITIES[i] for i in bands] == [expected, m.severity(score * 2, 1.0)]


def test_reason_codes_are_a_closed_documented_set() -> None:
    assert set(m.DEAD_LETTER_REASONS) >= {
        "undecodable_bytes",
        "invalid_json",
        "wrong_type",
        "missing_field",
        "wrong_length",
        "non_finite",
        "oversized",
        "unknown_content_type",
    }
    assert ":class:`DeadLetterReason`" in (m.__doc__ or "")


def test_severity_names_match_the_event_schema() -> None:
    assert m.anomaly_event_schema()["properties"]["severity"]["enum"] == list(m.SEVERITIES)
    assert [name for _, name in m.SEVERITY_BOUNDS] + ["critical"] == list(m.SEVERITIES)


def test_iso_time_matches_numpy_over_the_accepted_range() -> None:
    rng = np.random.default_rng(3)
    stamps = [0, 999, 1000, 1_764_000_000_123, m.MAX_BEAT_TIME_MS]
    stamps += rng.integers(0, m.MAX_BEAT_TIME_MS, 5000).tolist()
    expected = np.datetime_as_string(np.array(stamps, dtype="datetime64[ms]"), unit="ms")
    assert [m.iso_time(ms) for ms in stamps] == [t + "Z" for t in expected.tolist()]
    assert m.iso_time(m.MAX_BEAT_TIME_MS) == "9999-12-31T23:59:59.999Z"
