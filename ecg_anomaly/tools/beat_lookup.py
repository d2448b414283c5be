"""A flagged beat, read back from the input topic by its event's coordinates, with its per-sample error.

An anomaly event says where a beat's error concentrates (``error_location``), not the error of each
sample, and it does not carry the beat. The live page reads the original record at the event's
``input`` topic, partition and offset, and scores its values again with the same ``model.onnx``
through :func:`~ecg_anomaly.schemas.loader.open_artifact` (onnxruntime, as the worker does): the
artifact's ``sample_error`` output is the per-sample error. The page shows that rescored score beside
the event's, and draws no error from a model whose version is not the event's.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ecg_anomaly.base.errors import ConfigError
from ecg_anomaly.base.kafka import ErrorLog, KafkaConnection, explain, quiet_config
from ecg_anomaly.schemas import messages as m
from ecg_anomaly.schemas.artifact import INPUT_NAME, SAMPLE_ERROR_OUTPUT, SCORE_OUTPUT, ArtifactMetadata

if TYPE_CHECKING:
    import onnxruntime as ort
    from confluent_kafka import Consumer, Message

CLIENT_ID = "ecg-live-page-beats"
FETCH_TIMEOUT = 5.0  # seconds to read one record back
CACHE_SIZE = 64  # beats kept, by event id: the page asks for the same latest few again and again

# Assigned partitions only, never a group (nothing committed); an offset the topic no longer holds
# is an error to report, not a jump to the end.
CONSUMER_SETTINGS: dict[str, object] = {
    "group.id": CLIENT_ID,
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "error",
    "fetch.wait.max.ms": 100,
}


class Rescorer:
    """The model the page scores fetched beats with: one onnxruntime session, its metadata."""

    def __init__(self, path: Path) -> None:
        from ecg_anomaly.schemas.loader import open_artifact  # onnxruntime: only when the page rescores

        if not path.is_file():
            raise ConfigError(f"--model: no such file {path}")
        self.path = path
        self.session: ort.InferenceSession
        self.metadata: ArtifactMetadata
        self.session, self.metadata = open_artifact(path.read_bytes(), f"model file {path}")

    def score(self, values: np.ndarray) -> tuple[float, np.ndarray]:
        """The score and the per-sample error (``sample_error``) of one beat of raw values."""
        score, sample_error = self.session.run(
            [SCORE_OUTPUT, SAMPLE_ERROR_OUTPUT], {INPUT_NAME: values.reshape(1, -1).astype(np.float32)}
        )
        return float(score[0]), sample_error[0]


def beat_values(headers: list[tuple[str, bytes]] | None, value: bytes | None) -> np.ndarray | str:
    """The raw values of a beat record (either content type), or why it has none."""
    content_type = m.header(headers, m.CONTENT_TYPE_HEADER) or m.JSON_CONTENT_TYPE
    value = value or b""
    if content_type.split(";")[0].strip() == m.BINARY_CONTENT_TYPE:
        if len(value) != 4 * m.BEAT_LENGTH:
            return f"a binary beat of {len(value)} bytes"
        return np.frombuffer(value, dtype="<f4").astype(np.float32)
    try:
        values = np.asarray(orjson.loads(value)["values"], dtype=np.float32)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return f"not a readable JSON beat ({exc})"
    return values if values.shape == (m.BEAT_LENGTH,) else f"a beat of shape {values.shape}"


class BeatLookup:
    """Views of flagged beats for the page (:meth:`view`), safe to call from several threads."""

    def __init__(self, connection: KafkaConnection, rescorer: Rescorer | None) -> None:
        self.connection = connection
        self.rescorer = rescorer
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._consumer: Consumer | None = None
        self._errors = ErrorLog()

    def view(self, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` plus ``values``, ``sample_error``, ``rescored`` and ``note`` (what is missing, why)."""
        key = str(event.get("event_id"))
        with self._lock:
            if key not in self._cache:
                self._cache[key] = {**event, **self._look_up(event)}
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            return self._cache[key]

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    def _look_up(self, event: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {"values": None, "sample_error": None, "rescored": None, "note": ""}
        where = event.get("input") or {}
        try:
            topic, partition, offset = str(where["topic"]), int(where["partition"]), int(where["offset"])
        except (KeyError, TypeError, ValueError):
            return {**found, "note": "the event has no input coordinates"}
        record = self._fetch(topic, partition, offset)
        if isinstance(record, str):
            return {**found, "note": record}
        values = beat_values(record.headers(), record.value())
        if isinstance(values, str):
            return {**found, "note": f"{topic} {partition}@{offset} is {values}"}
        found["values"] = values.tolist()
        if self.rescorer is None:
            return {**found, "note": "no model given (--model): the per-sample error is not drawn"}
        version = self.rescorer.metadata.model_version
        if event.get("model_version") != version:
            note = f"the page's model is {version}, the event's {event.get('model_version')}: no error drawn"
            return {**found, "note": note}
        score, sample_error = self.rescorer.score(values)
        return {**found, "sample_error": sample_error.tolist(), "rescored": score}

    def _fetch(self, topic: str, partition: int, offset: int) -> Message | str:
        """The record at ``topic`` [``partition``] @ ``offset``, or why it could not be read."""
        from confluent_kafka import Consumer, TopicPartition

        if self._consumer is None:
            config = {**quiet_config(self.connection, CLIENT_ID, self._errors), **CONSUMER_SETTINGS}
            self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + FETCH_TIMEOUT
        where = f"{topic} {partition}@{offset}"
        while time.monotonic() < deadline:
            record = self._consumer.poll(0.2)
            if record is None:
                continue
            error = record.error()
            if error is not None and error.name() == "_AUTO_OFFSET_RESET":
                return f"{where} is not in the topic (deleted by retention, or never written)"
            if error is not None:
                return f"cannot read {where}: {explain([error])}"
            if (record.topic(), record.partition()) != (topic, partition):
                continue  # left over from an earlier assignment
            if record.offset() == offset:
                return record
            if record.offset() > offset:
                return f"{where} is gone (compacted away)"
        cause = explain(self._errors.errors) or "no answer"
        return f"{where} not read within {FETCH_TIMEOUT:g} s: {cause}"
