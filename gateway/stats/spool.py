"""`Spool`: an append-only on-disk store of serialized usage records: a write-ahead journal, and what memory cannot
hold, for restarts and crashes.

A spool directory holds segment files named `<pid>-<seq>.spool` (the entry format is in `spool_format`). One writer
per `Spool` appends to its active segment and holds an exclusive `flock` on it, and keeps holding a segment after it
is sealed for as long as memory still holds some of its records for delivery. A reader claims only segments it can
lock without blocking, so gateway processes sharing a directory never read a segment still being written or
delivered, and the segments of a process that died (its locks died with it) go to whoever claims next. Records the
stats server stored are acknowledged in their own segment, so a replay skips them; a segment is deleted once every
record in it is acknowledged. A crash between storing and acknowledging replays a record again, which an idempotent
server turns into a duplicate it does not store, never into loss.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.stats.spool_format import Decoded, decode, frame, frame_ack

__all__ = ["Decoded", "OwnSegment", "Segment", "Slot", "Spool", "decode", "frame"]

log = logging.getLogger("tollgate.stats")

_NAME = re.compile(r"^(\d+)-(\d+)\.spool$")
_MAX_SEGMENT = 4 << 20
_MIN_SEGMENT = 4 << 10
# Name collisions happen only when several spools of one process share a directory (tests); a few tries suffice.
_CREATE_TRIES = 100


@dataclass(slots=True)
class Segment:
    """A segment claimed for replay: locked by this process until deleted or released."""

    path: str
    fd: int
    size: int
    entries: list[bytes]  # the records not acknowledged yet
    torn: int
    skipped_bytes: int
    indices: tuple[int, ...] = ()  # the record number of each entry, for its acknowledgement
    writable: bool = False  # acknowledgements can be appended to it


@dataclass(slots=True, eq=False)
class OwnSegment:
    """A segment this spool wrote: locked while it is active or memory holds records of it."""

    path: str
    fd: int
    size: int = 0
    records: int = 0
    held: int = 0  # records memory holds for delivery (acknowledged, or let go, later)
    acked: int = 0
    dirty: bool = False  # written since its last fsync


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a record was written: its segment and its number there."""

    segment: OwnSegment
    index: int


@dataclass(slots=True)
class _Listing:
    paths: list[str] = field(default_factory=list)  # oldest first
    total_bytes: int = 0
    max_own_seq: int = -1


class Spool:
    """Segments of usage records in one directory, bounded in total size; see the module docstring.

    Appends are one `write` call each (no fsync): a record is in the page cache at once, so it survives the process
    being killed; `sync` (called by the reporter every `fsync_interval`) makes it survive a power loss too. Nothing
    here raises `OSError` to its caller: a failed write returns None and leaves the reason in `last_error`.
    """

    def __init__(self, directory: str, max_bytes: int, *, segment_bytes: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(_MAX_SEGMENT, max(_MIN_SEGMENT, max_bytes // 8))
        self.last_error = ""
        self._pid = os.getpid()
        self._seq = 0
        self._bytes = 0
        self._active: OwnSegment | None = None
        self._held: list[OwnSegment] = []  # sealed, but memory still holds records of them
        self._unsynced: list[str] = []
        self._opened = False
        self._scan_error = ""

    @property
    def bytes_used(self) -> int:
        """Bytes of segments on disk, as of the last scan plus this process's appends since."""
        return self._bytes

    @property
    def active_records(self) -> int:
        """Records in the segment this spool is writing (not yet claimable)."""
        return self._active.records if self._active else 0

    @property
    def active_unheld(self) -> bool:
        """Whether the active segment has records memory does not hold (they need a replay once it is sealed)."""
        active = self._active
        return active is not None and active.records > active.held + active.acked

    @property
    def needs_sync(self) -> bool:
        """Whether something was written since the last `sync`."""
        return bool(self._unsynced) or any(s is not None and s.dirty for s in (self._active, *self._held))

    def open(self) -> None:
        """Create the directory if needed and take stock of what earlier runs left in it."""
        self._opened = True
        try:
            os.makedirs(self.directory, exist_ok=True)
            listing = self._scan()
        except OSError as exc:
            self.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
            log.error("usage spool %s is unusable: %s", self.directory, self.last_error)
            return
        self._seq = listing.max_own_seq + 1
        self._bytes = listing.total_bytes
        if listing.paths:
            count = len(listing.paths)
            log.info("usage spool %s: %d segments (%d bytes) to replay", self.directory, count, self._bytes)

    def append(self, payload: bytes) -> bool:
        """Append one serialized record for a later replay; False when it would pass `max_bytes` or the disk
        refused it."""
        return self.write(payload, held=False) is not None

    def write(self, payload: bytes, *, held: bool) -> Slot | None:
        """Append one serialized record; `held`: memory keeps it for delivery and will `ack` or `let_go` of it."""
        entry = frame(payload)
        if self._bytes + len(entry) > self.max_bytes:
            self.last_error = f"over spool_max_bytes ({self.max_bytes})"
            return None
        active = self._active
        try:
            if active is None or (active.records and active.size + len(entry) > self.segment_bytes):
                active = self._rotate()
            _write_all(active.fd, entry)
        except OSError as exc:
            self.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
            self._abandon()
            return None
        slot = Slot(active, active.records)
        active.size += len(entry)
        active.records += 1
        active.dirty = True
        if held:
            active.held += 1
        self._bytes += len(entry)
        return slot

    def ack(self, segment: OwnSegment, indices: list[int]) -> None:
        """Memory's records `indices` of `segment` were stored: say so in the segment, and let go of them."""
        if segment.fd >= 0:
            entry = frame_ack(indices)
            try:
                _write_all(segment.fd, entry)
                segment.size += len(entry)
                self._bytes += len(entry)
            except OSError as exc:  # not fatal: those records are replayed again, and the server dedupes them
                log.warning("usage spool: cannot acknowledge records in %s: %s", segment.path, exc)
        segment.acked += len(indices)
        self.let_go(segment, len(indices))
        if segment is self._active and segment.acked >= segment.records:
            self.seal()  # all of it stored: delete it now, so a spool with nothing to deliver is an empty directory

    def let_go(self, segment: OwnSegment, count: int) -> None:
        """Memory no longer holds `count` records of `segment`: stored (see `ack`), or left for a replay."""
        segment.held -= count
        if segment is not self._active and segment.held <= 0:
            self._settle(segment)

    def seal(self) -> None:
        """Stop writing the active segment; it can be claimed once memory holds none of its records."""
        active, self._active = self._active, None
        if active is None:
            return
        if active.records == 0:
            os.close(active.fd)
            active.fd = -1
            self._unlink(active.path, active.size)
            return
        if active.held > 0:
            self._held.append(active)
        else:
            self._settle(active)

    def sync(self) -> None:
        """Fsync what was written since the last sync: the active segment, held ones, rotated ones, the directory."""
        for segment in (self._active, *self._held):
            if segment is not None and segment.dirty and segment.fd >= 0:
                segment.dirty = False
                _fsync_fd(segment.fd, segment.path)
        if self._unsynced:
            paths, self._unsynced = self._unsynced, []
            _fsync_quietly((*paths, self.directory))

    def close(self) -> None:
        """Seal the active segment, let go of every held one (their records are replayed by the next run) and make
        everything written durable; writes after it start a new segment."""
        self.seal()
        for segment in list(self._held):
            segment.held = 0
            self._settle(segment)
        paths, self._unsynced = self._unsynced, []
        _fsync_quietly((*paths, self.directory))

    def claim(self) -> Segment | None:
        """The oldest segment no process is writing or replaying, locked and read; None when there is none."""
        try:
            listing = self._scan()
        except FileNotFoundError:
            return None  # nothing was ever spooled here
        except OSError as exc:
            if str(exc) != self._scan_error:  # called every flush interval: say it once
                self._scan_error = str(exc)
                log.warning("usage spool %s cannot be listed: %s", self.directory, exc)
            return None
        self._scan_error = ""
        self._bytes = listing.total_bytes
        for path in listing.paths:
            segment = _try_claim(path)
            if segment is not None:
                return segment
        return None

    def ack_claimed(self, segment: Segment, indices: Iterable[int]) -> None:
        """Records of a claimed segment were stored: say so in it, so a crash before its deletion skips them."""
        if not segment.writable:
            return
        entry = frame_ack(indices)
        try:
            _write_all(segment.fd, entry)
        except OSError as exc:
            log.warning("usage spool: cannot acknowledge records in %s: %s", segment.path, exc)
            return
        segment.size += len(entry)
        self._bytes += len(entry)

    def delete(self, segment: Segment) -> None:
        """Delete a claimed segment whose every record was delivered, then let go of its lock."""
        self._unlink(segment.path, segment.size)
        os.close(segment.fd)

    def release(self, segment: Segment) -> None:
        """Let go of a claimed segment without deleting it: it is replayed again later, by any process."""
        os.close(segment.fd)

    def _settle(self, segment: OwnSegment) -> None:
        """A sealed segment memory no longer holds: deleted when all of it was stored, else unlocked for a replay."""
        if segment in self._held:
            self._held.remove(segment)
        if segment.fd < 0:
            return
        fd, segment.fd = segment.fd, -1
        if segment.acked >= segment.records:
            os.close(fd)
            self._unlink(segment.path, segment.size)
            return
        if segment.dirty:
            _fsync_fd(fd, segment.path)
        os.close(fd)

    def _rotate(self) -> OwnSegment:
        previous = self._active
        if previous is not None:
            # On the caller's path: no fsync here; the background task's `sync` makes it durable.
            if previous.dirty:
                self._unsynced.append(previous.path)
                previous.dirty = False
            self.seal()
        self._active = self._create()
        return self._active

    def _create(self) -> OwnSegment:
        if not self._opened:
            self.open()  # records spilled before the reporter started
        for _ in range(_CREATE_TRIES):
            path = os.path.join(self.directory, f"{self._pid}-{self._seq:08d}.spool")
            self._seq += 1
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            except FileExistsError:
                continue
            # A reader may lock (and delete, it is empty) the file between its creation and our lock: start over.
            if _lock(fd) and _same_file(path, fd):
                self._unsynced.append(self.directory)  # the new name must reach the disk too
                return OwnSegment(path, fd)
            os.close(fd)
        raise OSError(17, "no free segment name")

    def _abandon(self) -> None:
        """A write failed: cut the active segment back to its whole entries and stop writing it."""
        active = self._active
        if active is None:
            return
        with contextlib.suppress(OSError):  # best effort: a torn tail is also handled by the reader
            os.ftruncate(active.fd, active.size)
        if active.records:
            self._unsynced.append(active.path)
            self.seal()
        else:
            self._active = None
            os.close(active.fd)
            with contextlib.suppress(OSError):  # a failed first write must not leave an empty file per record
                os.unlink(active.path)

    def _unlink(self, path: str, size: int) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("usage spool: cannot delete %s: %s", path, exc)
            return
        self._bytes = max(0, self._bytes - size)

    def _scan(self) -> _Listing:
        found: list[tuple[int, str, int]] = []
        listing = _Listing()
        own = {s.path for s in (self._active, *self._held) if s is not None}
        with os.scandir(self.directory) as it:
            for entry in it:
                match = _NAME.match(entry.name)
                if match is None:
                    continue
                with contextlib.suppress(FileNotFoundError):  # deleted by another process meanwhile
                    stat = entry.stat()
                    listing.total_bytes += stat.st_size
                    if int(match[1]) == self._pid:
                        listing.max_own_seq = max(listing.max_own_seq, int(match[2]))
                    if entry.path not in own:
                        found.append((stat.st_mtime_ns, entry.name, stat.st_size))
        listing.paths = [os.path.join(self.directory, name) for _, name, _ in sorted(found)]
        return listing


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(28, "short write (disk full?)")


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(path: str, fd: int) -> bool:
    """Whether `path` still names the file open as `fd` (it was not deleted by whoever held the lock before us)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _open_for_claim(path: str) -> tuple[int, bool]:
    """The segment opened for reading and, where allowed, for appending acknowledgements."""
    try:
        return os.open(path, os.O_RDWR | os.O_APPEND), True
    except PermissionError:
        return os.open(path, os.O_RDONLY), False


def _try_claim(path: str) -> Segment | None:
    try:
        fd, writable = _open_for_claim(path)
    except FileNotFoundError:
        return None
    try:
        if not (_lock(fd) and _same_file(path, fd)):
            os.close(fd)
            return None
        with open(fd, "rb", closefd=False) as file:
            data = file.read()
    except OSError as exc:
        log.warning("usage spool: cannot read %s: %s", path, exc)
        os.close(fd)
        return None
    decoded = decode(data)
    size = len(data)
    if decoded.torn:
        log.warning(
            "usage spool: %s ends in a torn or corrupt entry: %d bytes skipped, %d records kept",
            path,
            decoded.skipped_bytes,
            len(decoded.entries),
        )
        if writable:
            # Its writer is gone (we hold the lock): cut the tail, so acknowledgements appended after it are read.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, decoded.valid_bytes)
                size = decoded.valid_bytes
    return Segment(path, fd, size, decoded.entries, decoded.torn, decoded.skipped_bytes, decoded.indices, writable)


def _fsync_fd(fd: int, path: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        log.warning("usage spool: fsync of %s failed: %s", path, exc)


def _fsync_quietly(paths: Iterable[str]) -> None:
    for path in dict.fromkeys(paths):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # already replayed and deleted: nothing left to make durable
        except OSError as exc:
            log.warning("usage spool: cannot open %s to fsync it: %s", path, exc)
            continue
        try:
            _fsync_fd(fd, path)
        finally:
            os.close(fd)
