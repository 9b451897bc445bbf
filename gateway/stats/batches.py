"""The usage records waiting in memory, and the batches made of them (or of a claimed spool segment).

Records are kept serialized (about 300 bytes each instead of about 3 KB for a live message), with the spool slot
each was journaled in, so that once the server stores a batch the journal can say so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.stats.spool import Slot
from gateway.stats.wire import MAX_BATCH_BYTES, encode_report_request


@dataclass(slots=True)
class Batch:
    """Records travel serialized: spooled ones are never parsed, and a batch is encoded once for all its retries."""

    payloads: list[bytes]
    request: bytes  # the serialized ReportRequest holding them
    slots: list[Slot | None]  # from memory: where each record is journaled (None: not on disk)
    claimed: tuple[int, ...] | None = None  # from a claimed segment: each record's number in it

    @property
    def from_spool(self) -> bool:
        """Whether the batch was read from a claimed spool segment (else it came from memory)."""
        return self.claimed is not None


def spool_batch(entries: Sequence[bytes], indices: Sequence[int], max_batch: int) -> Batch:
    """A batch of the first records of a claimed segment, bounded in count and in bytes."""
    payloads = _bounded(entries, max_batch)
    return Batch(payloads, encode_report_request(payloads), [], tuple(indices[: len(payloads)]))


def _bounded(entries: Sequence[bytes], max_batch: int) -> list[bytes]:
    # Bounded in bytes too: a server refuses a message over its limit (4 MiB by gRPC's default) for good.
    payloads: list[bytes] = []
    size = 0
    for payload in entries[:max_batch]:
        size += len(payload)
        if payloads and size > MAX_BATCH_BYTES:
            break
        payloads.append(payload)
    return payloads


class RecordQueue:
    """Serialized records in memory, oldest first, at most `room` of them."""

    __slots__ = ("_items", "room")

    def __init__(self, room: int) -> None:
        self.room = room  # set to zero at close: later records go straight to the spool
        self._items: deque[tuple[float, bytes, Slot | None]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, at: float, payload: bytes, slot: Slot | None) -> int:
        """Queue a record submitted at `at`; the new length, or 0 when there was no room."""
        items = self._items
        if len(items) >= self.room:
            return 0
        items.append((at, payload, slot))
        return len(items)

    def oldest(self) -> float:
        """When the oldest queued record was submitted (the queue must not be empty)."""
        return self._items[0][0]

    def take(self, max_batch: int) -> Batch:
        """The oldest records as one batch, bounded in count and in bytes."""
        items = self._items
        payloads: list[bytes] = []
        slots: list[Slot | None] = []
        size = 0
        while items and len(payloads) < max_batch:
            size += len(items[0][1])
            if payloads and size > MAX_BATCH_BYTES:
                break
            _, payload, slot = items.popleft()
            payloads.append(payload)
            slots.append(slot)
        return Batch(payloads, encode_report_request(payloads), slots)

    def drain(self) -> list[tuple[bytes, Slot | None]]:
        """Every queued record, removed."""
        out = [(payload, slot) for _, payload, slot in self._items]
        self._items.clear()
        return out
