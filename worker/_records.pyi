"""Types of the C extension worker/_records.c."""

from typing import Any, TypeVar

R = TypeVar("R")
M = TypeVar("M")

def take(messages: list[Any], record_type: type[R]) -> tuple[list[R], list[Any]]: ...
def binary_beats(
    records: list[Any],
    meta_type: type[M],
    beat_bytes: int,
    header: str,
    content_type: bytes,
    max_time_ms: int,
) -> tuple[list[M], list[bytes]] | None: ...
