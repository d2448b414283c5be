"""At-least-once without stalling the loop: batches whose outputs are still being acknowledged.

The loop sends a batch's outputs and goes on to the next poll instead of waiting
for the broker. Each batch keeps a count of outputs not yet acknowledged; a
batch is *done* when that count reaches zero. Done batches are retired strictly
in input order, and only a retired batch's offsets may be committed, so an
offset is never committed ahead of an output, of its own batch or of an
earlier one. A failed output stops retirement at its batch: the loop then
rewinds every partition to the first offset not yet retired.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Offsets = dict[tuple[str, int], int]  # (topic, partition) → offset


def earliest(*offsets: Offsets) -> Offsets:
    """Per partition, the earliest of the offsets given for it (where a rewind of them all goes)."""
    out: Offsets = {}
    for each in offsets:
        for tp, offset in each.items():
            out[tp] = min(offset, out.get(tp, offset))
    return out


@dataclass(eq=False, slots=True)
class Batch:
    first: Offsets  # first offset of the batch per partition: where a rewind goes
    next: Offsets  # offset after the batch per partition: what a commit records
    inputs: int  # records consumed
    remaining: int  # outputs not yet acknowledged
    on_retired: Callable[[], None] = field(default=lambda: None)  # counts the batch, once
    error: Any = None  # the first delivery error
    refused: dict[str, Any] | None = None  # which record that was: topic, sizes, timestamp (for the log)

    def delivered(self, error: Any, message: Any = None) -> None:
        """Delivery callback of each of this batch's outputs."""
        if error is not None and self.error is None:
            self.error = error
            if message is not None:
                self.refused = {
                    "refused_by": message.topic(),
                    "record_key_bytes": len(message.key() or b""),
                    "record_value_bytes": len(message.value() or b""),
                    "record_timestamp": message.timestamp()[1],
                }
        self.remaining -= 1

    def unsent(self, count: int, error: Any, topic: str) -> None:
        """``count`` outputs could not even be handed to the client, the first of them for ``topic``."""
        if self.error is None:
            self.error = error
            self.refused = {"refused_by": topic}
        self.remaining -= count


class InFlight:
    """The batches between "outputs sent" and "offsets committable", oldest first.

    ``limit`` bounds the input records in flight (not the batches: on a trickle
    batches are a few records each, and a count of batches would throttle to
    a few records per acknowledgement round trip).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inputs = 0
        self._batches: deque[Batch] = deque()

    def __len__(self) -> int:
        return len(self._batches)

    def add(self, batch: Batch) -> None:
        self._batches.append(batch)
        self.inputs += batch.inputs

    def full(self) -> bool:
        return self.inputs >= self.limit

    def retire(self) -> tuple[Offsets, Batch | None]:
        """Pop the done batches in front: their offsets (to commit), and the failed batch if it is first."""
        offsets: Offsets = {}
        while self._batches and self._batches[0].remaining <= 0:
            batch = self._batches[0]
            if batch.error is not None:
                return offsets, batch
            self._batches.popleft()
            self.inputs -= batch.inputs
            batch.on_retired()
            offsets.update(batch.next)
        return offsets, None

    def clear(self) -> Offsets:
        """Forget every batch not retired; the offset per partition to re-read them from."""
        rewind = earliest(*(batch.first for batch in self._batches))
        self._batches.clear()
        self.inputs = 0
        return rewind
