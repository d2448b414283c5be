"""JSON log lines: one object per line with time, level, logger, message and any ``extra`` fields."""

from __future__ import annotations

import logging
import re
import sys
import time

import orjson

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class RepeatFilter(logging.Filter):
    """Lets one line of a kind through per ``seconds``; the next one says how many were dropped.

    librdkafka logs every failed reconnect (several a second while a broker is down); a kind is
    the message with its numbers taken out (ports, timings, offsets).
    """

    _NUMBERS = re.compile(r"\d+")

    def __init__(self, seconds: float = 30.0) -> None:
        super().__init__()
        self.seconds = seconds
        self._seen: dict[str, tuple[float, int]] = {}  # kind → (last emitted, suppressed since)

    def filter(self, record: logging.LogRecord) -> bool:
        kind = self._NUMBERS.sub("#", record.getMessage())
        last, dropped = self._seen.get(kind, (-self.seconds, 0))
        if record.created - last < self.seconds:
            self._seen[kind] = (last, dropped + 1)
            return False
        if dropped:
            record.suppressed = dropped
        self._seen[kind] = (record.created, 0)
        return True


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(max(logging.getLevelName(level), logging.WARNING))
    logging.getLogger("librdkafka").addFilter(RepeatFilter())
