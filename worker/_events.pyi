"""Types of the C extension worker/_events.c."""

from typing import Any, TypeVar

import numpy as np

R = TypeVar("R")

def anomaly_events(
    beats: list[Any],
    score: bytes,
    ratio: bytes,
    share: bytes,
    peak_error: bytes,
    window_start: np.ndarray,
    window_end: np.ndarray,
    peak: np.ndarray,
    severities: list[str],
    shared: bytes,
    namespace: bytes,
    record_type: type[R],
    topic: str,
    headers: Any,
) -> list[R]: ...
