"""Spool: framing, torn tails, locking between writers and readers, the size bound, segment order."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from gateway.stats.spool import Spool, decode, frame


def payloads(n: int, size: int = 20) -> list[bytes]:
    return [f"{i:0{size}d}".encode() for i in range(n)]


def write_segment(path: Path, entries: list[bytes]) -> None:
    path.write_bytes(b"".join(frame(e) for e in entries))


def test_append_claim_delete(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    spool.open()
    for p in payloads(5):
        assert spool.append(p)
    assert spool.active_records == 5
    assert spool.bytes_used == 5 * (8 + 20)
    assert spool.claim() is None  # our own active segment is not claimable
    spool.seal()
    segment = spool.claim()
    assert segment is not None
    assert segment.entries == payloads(5)
    assert segment.torn == 0
    spool.delete(segment)
    assert not list(tmp_path.glob("*.spool"))
    assert spool.bytes_used == 0


def test_torn_tail_keeps_every_whole_entry() -> None:
    data = b"".join(frame(p) for p in payloads(4))
    for cut in (1, 5, 8, 20):  # inside the payload, inside the header, right after the header...
        decoded = decode(data[:-cut])
        assert decoded.entries == payloads(3)
        assert decoded.torn == 1
        assert decoded.skipped_bytes == 28 - cut
    assert decode(data).torn == 0


def test_corrupt_entry_stops_reading_there() -> None:
    good = payloads(3)
    bad = struct.pack("<II", 20, zlib.crc32(b"x")) + b"y" * 20
    decoded = decode(frame(good[0]) + bad + frame(good[2]))
    assert decoded.entries == good[:1]
    assert decoded.torn == 1
    assert decode(struct.pack("<II", 1 << 30, 0) + b"junk").entries == []  # an absurd length is corruption


def test_claims_a_torn_segment_and_counts_it(tmp_path: Path) -> None:
    path = tmp_path / "4242-00000000.spool"
    write_segment(path, payloads(3))
    os.truncate(path, path.stat().st_size - 3)
    spool = Spool(str(tmp_path), 1 << 20)
    segment = spool.claim()
    assert segment is not None
    assert (len(segment.entries), segment.torn, segment.skipped_bytes) == (2, 1, 25)


def test_a_second_spool_never_reads_the_active_segment_of_the_first(tmp_path: Path) -> None:
    writer = Spool(str(tmp_path), 1 << 20)
    reader = Spool(str(tmp_path), 1 << 20)
    writer.open()
    reader.open()
    assert writer.append(b"one")
    assert reader.claim() is None
    writer.seal()
    segment = reader.claim()
    assert segment is not None
    assert segment.entries == [b"one"]
    assert writer.claim() is None  # claimed: the lock keeps other readers off too
    reader.release(segment)
    again = writer.claim()
    assert again is not None
    writer.delete(again)


def test_segments_of_a_dead_process_are_picked_up_oldest_first(tmp_path: Path) -> None:
    write_segment(tmp_path / "7-00000003.spool", [b"old"])
    write_segment(tmp_path / "9-00000001.spool", [b"new"])
    os.utime(tmp_path / "7-00000003.spool", ns=(1_000_000_000, 1_000_000_000))
    (tmp_path / "notes.txt").write_text("not a segment")
    spool = Spool(str(tmp_path), 1 << 20)
    spool.open()
    assert spool.bytes_used == 2 * (8 + 3)
    first = spool.claim()
    assert first is not None
    assert first.entries == [b"old"]
    spool.delete(first)
    second = spool.claim()
    assert second is not None
    assert second.entries == [b"new"]


def test_new_segments_never_collide_with_leftovers_of_the_same_pid(tmp_path: Path) -> None:
    leftover = tmp_path / f"{os.getpid()}-00000005.spool"
    write_segment(leftover, [b"left"])
    spool = Spool(str(tmp_path), 1 << 20)
    spool.open()
    assert spool.append(b"mine")
    assert leftover.read_bytes() == frame(b"left")
    assert (tmp_path / f"{os.getpid()}-00000006.spool").exists()


def test_size_bound(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 100)
    spool.open()
    assert [spool.append(b"x" * 20) for _ in range(4)] == [True, True, True, False]
    assert "over spool_max_bytes" in spool.last_error
    assert spool.bytes_used == 84
    assert sum(p.stat().st_size for p in tmp_path.glob("*.spool")) == 84


def test_segments_rotate_and_replay_in_order(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 1 << 20, segment_bytes=100)
    spool.open()
    for p in payloads(10):
        assert spool.append(p)
    spool.close()
    assert len(list(tmp_path.glob("*.spool"))) == 4  # 28 bytes an entry, 3 to a segment
    replayed: list[bytes] = []
    while (segment := spool.claim()) is not None:
        replayed += segment.entries
        spool.delete(segment)
    assert replayed == payloads(10)


def test_an_unwritable_dir_refuses_appends_without_raising(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    spool = Spool(str(blocker / "spool"), 1 << 20)
    spool.open()
    assert spool.append(b"x") is False
    assert spool.last_error
    assert spool.claim() is None
    spool.close()


def test_a_zero_filled_tail_is_corruption_not_empty_records() -> None:
    """Some filesystems leave zeros after a power loss; an empty entry would decode as a record with no request id."""
    decoded = decode(frame(b"abc") + b"\0" * 64)
    assert decoded.entries == [b"abc"]
    assert decoded.torn == 1


def test_a_failed_first_write_leaves_no_empty_segment(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    spool.open()
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    os.write = full_disk  # type: ignore[assignment]
    try:
        for _ in range(20):
            assert not spool.append(frame(b"record"))
    finally:
        os.write = real_write  # type: ignore[assignment]
        spool.close()
    assert list(tmp_path.glob("*.spool")) == []


def test_acknowledged_records_are_skipped_by_a_replay(tmp_path: Path) -> None:
    """Records memory holds are written ahead; those the server stored are marked, so a later replay skips them."""
    spool = Spool(str(tmp_path), 1 << 20)
    spool.open()
    slots = [spool.write(p, held=True) for p in payloads(6)]
    assert all(slots)
    on_disk = decode(next(tmp_path.glob("*.spool")).read_bytes())
    assert on_disk.entries == payloads(6)  # on disk (the page cache) as soon as written
    segment = slots[0].segment  # type: ignore[union-attr]
    spool.ack(segment, [0, 1, 3])
    spool.close()  # a shutdown with records 2, 4 and 5 still in memory: they stay for the next run
    claimed = spool.claim()
    assert claimed is not None
    assert claimed.entries == [payloads(6)[i] for i in (2, 4, 5)]
    assert claimed.indices == (2, 4, 5)
    spool.ack_claimed(claimed, [2])  # a replay marks what it delivered too, then crashes before the rest
    spool.release(claimed)
    again = spool.claim()
    assert again is not None
    assert again.indices == (4, 5)


def test_a_fully_acknowledged_segment_is_deleted(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), 1 << 20)
    spool.open()
    slots = [spool.write(p, held=True) for p in payloads(3)]
    spool.ack(slots[0].segment, [0, 1, 2])  # type: ignore[union-attr]
    assert list(tmp_path.glob("*.spool")) == []
    assert spool.bytes_used == 0


def test_a_sealed_segment_stays_locked_while_memory_holds_its_records(tmp_path: Path) -> None:
    writer = Spool(str(tmp_path), 1 << 20, segment_bytes=60)
    reader = Spool(str(tmp_path), 1 << 20)
    first = [writer.write(p, held=True) for p in payloads(2)]
    writer.write(b"next segment", held=True)  # rotates: the first segment is sealed but still held
    assert reader.claim() is None
    writer.let_go(first[0].segment, 2)  # type: ignore[union-attr]  # memory gives them up (a rejected batch)
    claimed = reader.claim()
    assert claimed is not None
    assert claimed.entries == payloads(2)
    reader.release(claimed)
    writer.close()


def test_ack_entries_after_a_torn_tail_are_kept_by_cutting_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "4242-00000000.spool"
    write_segment(path, payloads(3))
    os.truncate(path, path.stat().st_size - 3)
    spool = Spool(str(tmp_path), 1 << 20)
    segment = spool.claim()
    assert segment is not None
    spool.ack_claimed(segment, [0])
    spool.release(segment)
    again = spool.claim()
    assert again is not None
    assert (again.indices, again.torn) == ((1,), 0)
