"""The bytes of a spool segment: record entries, acknowledgement entries, and reading them back.

A segment is a run of entries framed `[u32 length][u32 crc32][payload]` (little-endian; the CRC is of the payload).
A record entry's payload is a serialized `UsageRecord`. An entry whose length has its top bit set is an
acknowledgement: its payload is `(u32 first, u32 count)` pairs naming records of the same segment (numbered from 0
in the order they were written) that the stats server has stored, so a replay after a crash skips them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

_HEADER = struct.Struct("<II")
_RANGE = struct.Struct("<II")
ACK_FLAG = 0x8000_0000
# No usage record is anywhere near this: a larger length field is corruption, not a record.
MAX_ENTRY = 64 << 20


def frame(payload: bytes) -> bytes:
    """One record entry: the payload behind its length and CRC."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def frame_ack(indices: Iterable[int]) -> bytes:
    """One acknowledgement entry for the given record numbers (in any order), as ranges."""
    body = b"".join(_RANGE.pack(first, count) for first, count in _ranges(indices))
    return _HEADER.pack(len(body) | ACK_FLAG, zlib.crc32(body)) + body


def _ranges(indices: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for index in sorted(indices):
        if out and out[-1][0] + out[-1][1] == index:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((index, 1))
    return out


@dataclass(frozen=True, slots=True)
class Decoded:
    """The records of a segment not yet acknowledged, their numbers, and what was lost at its end."""

    entries: list[bytes]
    torn: int  # entries lost to a torn or corrupt tail (a crash mid-write): 0 or 1
    skipped_bytes: int
    indices: tuple[int, ...] = ()  # the record number of each of `entries`
    valid_bytes: int = 0  # the length of the whole entries before any torn tail
    acknowledged: int = 0  # records skipped because an acknowledgement names them


def decode(data: bytes) -> Decoded:
    """Split a segment's bytes into unacknowledged payloads, stopping cleanly at the first torn or corrupt entry."""
    records: list[bytes] = []
    acked: set[int] = set()
    view = memoryview(data)
    offset, end = 0, len(data)
    while end - offset >= _HEADER.size:
        length, crc = _HEADER.unpack_from(view, offset)
        is_ack = bool(length & ACK_FLAG)
        length &= ~ACK_FLAG
        start = offset + _HEADER.size
        # An empty entry is corruption, not a record (a record always has its request id): a zero-filled tail, as
        # some filesystems leave after a power loss, would otherwise decode as records and poison every batch.
        if length == 0 or length > MAX_ENTRY or start + length > end:
            break
        payload = bytes(view[start : start + length])
        if zlib.crc32(payload) != crc or (is_ack and length % _RANGE.size):
            break
        if is_ack:
            for first, count in _RANGE.iter_unpack(payload):
                acked.update(range(first, first + count))
        else:
            records.append(payload)
        offset = start + length
    skipped = end - offset
    kept = [i for i in range(len(records)) if i not in acked]
    return Decoded(
        entries=[records[i] for i in kept],
        torn=1 if skipped else 0,
        skipped_bytes=skipped,
        indices=tuple(kept),
        valid_bytes=offset,
        acknowledged=len(records) - len(kept),
    )
