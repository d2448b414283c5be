"""Dead letters: the input record untouched plus ``ecg.dlq.*`` headers, or, as a last resort, reduced.

The full dead letter keeps the input's key, value, headers and timestamp (as
Kafka Connect does). When the dead-letter topic would refuse it (too large for
its ``max.message.bytes``, or a timestamp outside its window: see
:mod:`worker.topic_limits`), a reduced dead letter is written instead, so bad
input never stalls its partition: the same ``ecg.dlq.*`` headers, the input's
sizes, the key and value cut to what fits, the input's own headers only if they
fit, and the time of failure as its timestamp. If not even that fits,
:class:`Unpublishable` says so and the batch takes the retry-then-exit path.
"""

from __future__ import annotations

from collections.abc import Sequence

from ecg_anomaly.base.errors import EcgAnomalyError
from ecg_anomaly.schemas import messages as m
from ecg_anomaly.worker.decode import Reject
from ecg_anomaly.worker.events import OutRecord
from ecg_anomaly.worker.topic_limits import TopicLimits, record_bytes

MESSAGE_BYTES = 1000  # a reduced dead letter's ecg.dlq.message is cut to this


class Unpublishable(EcgAnomalyError):
    """Not even a reduced dead letter fits the dead-letter topic (its limit is smaller than the headers)."""


class DeadLetters:
    def __init__(self, topic: str, group_id: str, client_id: str) -> None:
        self.topic = topic
        self._static = [(m.DLQ_CONSUMER_GROUP, group_id.encode()), (m.DLQ_WORKER, client_id.encode())]

    def build(self, reject: Reject, limits: TopicLimits, now_ms: int) -> tuple[OutRecord, str | None]:
        """The dead letter of ``reject`` and, if it had to be reduced, why (``size``, ``timestamp``)."""
        full = self.full(reject, now_ms)
        size = record_bytes(full.key, full.value, full.headers)
        why = []
        if not limits.fits(size):
            why.append("size")
        if not limits.accepts_timestamp(full.timestamp_ms, now_ms):
            why.append("timestamp")
        if not why:
            return full, None
        cause = ",".join(why)
        return self.reduced(reject, limits, now_ms, cause), cause

    def full(self, reject: Reject, now_ms: int) -> OutRecord:
        record = reject.record
        headers = [*(record.headers or ()), *self._headers(reject, now_ms, reject.message)]
        return OutRecord(self.topic, record.key, record.value, headers, max(record.timestamp, 0))

    def reduced(self, reject: Reject, limits: TopicLimits, now_ms: int, cause: str) -> OutRecord:
        """What fits: our headers always, then the key, the input's headers and the value, cut as needed."""
        record = reject.record
        key, value = record.key or b"", record.value or b""
        own = [
            *self._headers(reject, now_ms, reject.message[:MESSAGE_BYTES]),
            (m.DLQ_REDUCED, cause.encode()),
            (m.DLQ_KEY_BYTES, str(len(key)).encode()),
            (m.DLQ_VALUE_BYTES, str(len(value)).encode()),
        ]
        truncated_header = (m.DLQ_TRUNCATED, b"key,value,headers")  # the longest it can be
        room = limits.max_message_bytes - record_bytes(None, None, [*own, truncated_header])
        if room < 0:
            raise Unpublishable(
                f"the dead-letter topic {self.topic} accepts records of at most "
                f"{limits.max_message_bytes:,} bytes (max.message.bytes); a reduced dead letter needs "
                f"{limits.max_message_bytes - room:,}"
            )
        cut: list[str] = []
        kept_key = key[: max(room // 2, 0)] if len(key) > room // 2 else key
        if len(kept_key) < len(key):
            cut.append("key")
        room -= len(kept_key)
        input_headers: Sequence[tuple[str, bytes]] = record.headers or ()
        headers_size = record_bytes(None, None, input_headers) - record_bytes(None, None, None)
        if headers_size > room // 2 and input_headers:
            input_headers = ()
            cut.append("headers")
        else:
            room -= headers_size
        kept_value = value[: max(room, 0)]
        if len(kept_value) < len(value):
            cut.append("value")
        headers = [*input_headers, *own, (m.DLQ_TRUNCATED, ",".join(sorted(cut)).encode())]
        return OutRecord(self.topic, None if record.key is None else kept_key, kept_value, headers, now_ms)

    def _headers(self, reject: Reject, now_ms: int, message: str) -> list[tuple[str, bytes]]:
        record = reject.record
        return [
            (m.DLQ_REASON, reject.reason.value.encode()),
            (m.DLQ_MESSAGE, message.encode()),
            (m.DLQ_TOPIC, record.topic.encode()),
            (m.DLQ_PARTITION, str(record.partition).encode()),
            (m.DLQ_OFFSET, str(record.offset).encode()),
            (m.DLQ_TIMESTAMP, str(record.timestamp).encode()),
            *self._static,
            (m.DLQ_FAILED_AT, m.iso_time(now_ms).encode()),
        ]
