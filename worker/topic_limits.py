"""What each output topic accepts, so the worker never produces a record the broker will refuse.

Kafka refuses a record batch larger than its topic's ``max.message.bytes`` and,
when the topic keeps producer timestamps (``message.timestamp.type=CreateTime``,
the default), a record stamped more than ``message.timestamp.after.max.ms``
ahead of the broker's clock (1 hour by default) or more than
``message.timestamp.before.max.ms`` behind it (unlimited by default). The
broker refuses the whole batch, every record in it, and its delivery reports
do not say which record was at fault: refusals cannot be handled after the
fact, only avoided. So the worker reads these configs through the admin API
(``DescribeConfigs`` on the output topics) at start and every
:data:`REFRESH_SECONDS`, again at once after any refusal, and checks every
output against them before producing it. Where they cannot be read (the topic
does not exist yet, or the principal may not describe it) Kafka's defaults
are assumed, capped by ``--max-output-bytes``.

The producer follows the limits too: its ``message.max.bytes`` (a client-side
refusal) is the largest topic limit, and its ``batch.size`` is under the
smallest, so that records which fit one by one are never refused together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)

KAFKA_MAX_MESSAGE_BYTES = 1_048_588  # the broker's and topics' default max.message.bytes
KAFKA_TIMESTAMP_AFTER_MS = 3_600_000  # message.timestamp.after.max.ms (Kafka 3.6+)
UNLIMITED_MS = 2**63 - 1  # message.timestamp.before.max.ms default
LIBRDKAFKA_BATCH_SIZE = 1_000_000  # its default batch.size, kept where the topics allow it
REFRESH_SECONDS = 30.0  # a limit raised again is noticed this soon (a refusal re-reads at once)
CLOCK_MARGIN_MS = 60_000  # a timestamp this close to a window's edge (or half as close) counts as outside

# A record batch of one record: the batch header (61 bytes) and the record's own framing (length,
# attributes, timestamp and offset deltas, key and value lengths, header count: at most 36 bytes as
# varints); each header adds its two lengths (at most 10 bytes).
_BATCH_OVERHEAD = 61 + 36
_HEADER_OVERHEAD = 10
_BATCH_MARGIN = 512  # batch.size below the smallest limit by this much


def record_bytes(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> int:
    """An upper bound of the size the broker checks for a batch holding just this record."""
    size = _BATCH_OVERHEAD + len(key or b"") + len(value or b"")
    for name, data in headers or ():
        size += _HEADER_OVERHEAD + len(name.encode()) + len(data or b"")
    return size


@dataclass(frozen=True)
class TopicLimits:
    """One topic's limits; Kafka's defaults unless read from the broker (``known``)."""

    max_message_bytes: int = KAFKA_MAX_MESSAGE_BYTES
    create_time: bool = True  # False: LogAppendTime, the broker stamps records itself
    after_ms: int = KAFKA_TIMESTAMP_AFTER_MS
    before_ms: int = UNLIMITED_MS
    known: bool = False

    def fits(self, size: int) -> bool:
        return size <= self.max_message_bytes

    def accepts_timestamp(self, timestamp_ms: int, now_ms: int) -> bool:
        """Whether the topic accepts a record stamped ``timestamp_ms`` (0 or less: the producer stamps it)."""
        if not self.create_time or timestamp_ms <= 0:
            return True
        if timestamp_ms > now_ms + self.after_ms - min(CLOCK_MARGIN_MS, self.after_ms // 2):
            return False
        if self.before_ms >= UNLIMITED_MS // 2:
            return True
        return timestamp_ms >= now_ms - self.before_ms + min(CLOCK_MARGIN_MS, self.before_ms // 2)

    def describe(self) -> str:
        return f"max.message.bytes {self.max_message_bytes:,}" + ("" if self.known else " (assumed)")


def from_configs(configs: dict[str, str]) -> TopicLimits:
    """The limits in a topic's configs (``DescribeConfigs``), defaults for what is missing."""

    def number(name: str, default: int) -> int:
        try:
            return int(configs[name])
        except (KeyError, ValueError):
            return default

    return TopicLimits(
        max_message_bytes=number("max.message.bytes", KAFKA_MAX_MESSAGE_BYTES),
        create_time=configs.get("message.timestamp.type", "CreateTime") != "LogAppendTime",
        after_ms=number("message.timestamp.after.max.ms", KAFKA_TIMESTAMP_AFTER_MS),
        before_ms=number("message.timestamp.before.max.ms", UNLIMITED_MS),
        known=True,
    )


@dataclass(frozen=True)
class ProducerBounds:
    """The producer settings the limits decide."""

    message_max_bytes: int  # librdkafka refuses larger records before sending
    batch_size: int  # librdkafka's batches stay under this (a single larger record goes alone)


class OutputLimits:
    """The output topics' limits: a snapshot the loop reads, refreshed by a background thread.

    ``reader(topics, timeout)`` returns each topic's configs (or raises); tests pass their own.
    ``cap`` is ``--max-output-bytes`` (0 = none).
    """

    def __init__(
        self,
        topics: Iterable[str],
        reader: Callable[[list[str], float], dict[str, dict[str, str] | None]],
        cap: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self.topics = [t for t in dict.fromkeys(topics) if t]
        self._reader = reader
        self._cap = cap
        self._timeout = timeout
        self._limits: dict[str, TopicLimits] = {t: self._capped(TopicLimits()) for t in self.topics}
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._warned = False
        self.refreshed = 0  # successful reads, for tests and logs

    def __getitem__(self, topic: str) -> TopicLimits:
        return self._limits.get(topic) or self._capped(TopicLimits())

    def _capped(self, limits: TopicLimits) -> TopicLimits:
        if self._cap and self._cap < limits.max_message_bytes:
            return replace(limits, max_message_bytes=self._cap)
        return limits

    def producer_bounds(self) -> ProducerBounds:
        sizes = [self[t].max_message_bytes for t in self.topics] or [KAFKA_MAX_MESSAGE_BYTES]
        batch = min(LIBRDKAFKA_BATCH_SIZE, min(sizes) - _BATCH_MARGIN)
        return ProducerBounds(message_max_bytes=max(max(sizes), 1000), batch_size=max(batch, 1))

    def refresh(self) -> bool:
        """Read the topics' configs now; True if any limit changed. Never raises."""
        with self._lock:
            try:
                configs = self._reader(self.topics, self._timeout)
            except Exception as exc:  # the admin client's errors are untyped; the defaults stay
                self._warn(f"cannot read the output topics' configs ({exc})")
                return False
            limits = {}
            for topic in self.topics:
                found = configs.get(topic)  # None: unreadable now; what was known stays
                limits[topic] = self._capped(from_configs(found)) if found is not None else self[topic]
            unknown = [t for t in self.topics if configs.get(t) is None]
            if unknown:
                self._warn(f"cannot read the configs of {', '.join(unknown)}")
            changed = limits != self._limits
            if changed and self.refreshed:
                log.info(
                    "output topic limits changed",
                    extra={"limits": {t: limits[t].describe() for t in self.topics}},
                )
            self._limits = limits
            self.refreshed += 1
            return changed

    def _warn(self, what: str) -> None:
        if self._warned:
            return
        self._warned = True
        log.warning(
            f"{what}; assuming Kafka's defaults (max.message.bytes 1048588, timestamps at most 1 h "
            "ahead). Grant DescribeConfigs on the output topics, or set --max-output-bytes"
        )

    def start(self) -> None:
        """Refresh every :data:`REFRESH_SECONDS` (or when :meth:`wake` is called) on a daemon thread."""
        threading.Thread(target=self._run, name="topic-limits", daemon=True).start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(REFRESH_SECONDS)
            self._wake.clear()
            self.refresh()


def admin_reader(config: dict[str, Any]) -> Callable[[list[str], float], dict[str, dict[str, str] | None]]:
    """A reader of topic configs through confluent-kafka's admin client built from ``config``.

    A client per read: a refresh every few minutes does not justify another client's threads and
    memory for the worker's whole life.
    """

    def read(topics: list[str], timeout: float) -> dict[str, dict[str, str] | None]:
        from confluent_kafka.admin import AdminClient, ConfigResource

        admin = AdminClient(config)
        futures = admin.describe_configs(
            [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics], request_timeout=timeout
        )
        found: dict[str, dict[str, str] | None] = {}
        for resource, future in futures.items():
            try:
                entries = future.result(timeout=timeout + 1)
            except Exception:  # this topic only: e.g. it does not exist yet, or is not ours to describe
                found[resource.name] = None
                continue
            found[resource.name] = {name: entry.value for name, entry in entries.items()}
        return found

    return read
