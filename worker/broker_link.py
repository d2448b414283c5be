"""Whether the worker can reach a broker, and how far behind each partition is, from librdkafka's reports.

librdkafka has no "broker back" event: its statistics (every second) say which brokers are ``UP``;
its error callback says at once when all are down, and which errors were fatal. Both run inside
``consume``/``poll`` on the loop's own thread.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import orjson
from confluent_kafka import KafkaError

from ecg_anomaly.base.kafka import explain

log = logging.getLogger(__name__)


class BrokerLink:
    """Whether the worker can reach a broker, from librdkafka's statistics and error events.

    A broker that crashed or stopped answering shows as not ``UP`` in the next
    statistics (every second); "all brokers down" clears it at once. The last
    statistics also give each partition's lag, and the last errors say why no
    broker answers (:meth:`cause`): a refused password or certificate looks like
    an unreachable broker to the loop.
    """

    def __init__(self) -> None:
        self.connected = False
        self.lag: dict[int, int] = {}  # partition → messages behind the log end
        self.fatal: KafkaError | None = None  # a client that reported this is unusable: restart
        self._last_error: dict[int, float] = {}
        self._recent: deque[KafkaError] = deque(maxlen=20)

    def on_stats(self, raw: str) -> None:
        stats = orjson.loads(raw)
        self.connected = any(b.get("state") == "UP" for b in stats.get("brokers", {}).values())
        lag = {}
        for topic in stats.get("topics", {}).values():
            for key, p in topic.get("partitions", {}).items():
                position = p.get("app_offset", -1001)
                if position < 0:
                    position = p.get("committed_offset", -1001)
                end = p.get("hi_offset", -1)
                if key != "-1" and p.get("fetch_state") == "active" and position >= 0 and end >= 0:
                    lag[int(key)] = end - position
        self.lag = lag

    def on_consumer_error(self, error: KafkaError) -> None:
        """The consumer's error callback: its fatal errors arrive as ``_FATAL`` without the fatal flag.

        A static member fenced by its own rejoin after a long broker outage is one (seen in chaos
        4): the consumer can do nothing more, so the loop exits at once instead of waiting out
        ``--broker-timeout`` with no partitions. The producer's fatal errors also surface from its
        own calls, with the code that tells fencing (exit 3) from the rest.
        """
        if error.code() == KafkaError._FATAL and self.fatal is None:
            self.fatal = error
        self.on_error(error)

    def cause(self) -> str:
        """The most telling of the recent client errors, in words (authentication, TLS, ...)."""
        return explain(list(self._recent)) or "no error reported"

    def on_error(self, error: KafkaError) -> None:
        self._recent.append(error)
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.connected = False
        if error.fatal() and self.fatal is None:
            self.fatal = error
        now = time.monotonic()
        if now - self._last_error.get(error.code(), -1e9) > 30:  # one line per kind per 30 s
            self._last_error[error.code()] = now
            log.warning("kafka client error", extra={"error": error.str(), "code": error.name()})
