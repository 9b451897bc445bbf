"""`Spool`: an append-only on-disk store of serialized usage records, for what memory cannot hold and for restarts.

A spool directory holds segment files named `<pid>-<seq>.spool`, each a run of entries framed
`[u32 length][u32 crc32][payload]` (little-endian; the CRC is of the payload). One writer per `Spool` appends to its
active segment and holds an exclusive `flock` on it for as long as it is active; a reader claims only segments it can
lock without blocking, so gateway processes sharing a directory never read a segment still being written, and the
segments of a process that died (its locks died with it) go to whoever claims next. A claimed segment is deleted only
when its owner says every record in it was delivered; a crash before that replays it again, which an idempotent
server turns into duplicates, never into loss.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger("tollgate.stats")

_HEADER = struct.Struct("<II")
_NAME = re.compile(r"^(\d+)-(\d+)\.spool$")
# No usage record is anywhere near this: a larger length field is corruption, not a record.
_MAX_ENTRY = 64 << 20
_MAX_SEGMENT = 4 << 20
_MIN_SEGMENT = 4 << 10
# Name collisions happen only when several spools of one process share a directory (tests); a few tries suffice.
_CREATE_TRIES = 100


def frame(payload: bytes) -> bytes:
    """One spool entry: the payload behind its length and CRC."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class Decoded:
    """The entries read from a segment, and what was lost at its end."""

    entries: list[bytes]
    torn: int  # entries lost to a torn or corrupt tail (a crash mid-write): 0 or 1
    skipped_bytes: int


def decode(data: bytes) -> Decoded:
    """Split a segment's bytes into payloads, stopping cleanly at the first torn or corrupt entry."""
    entries: list[bytes] = []
    view = memoryview(data)
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < _HEADER.size:
            break
        length, crc = _HEADER.unpack_from(view, offset)
        start = offset + _HEADER.size
        # An empty entry is corruption, not a record (a record always has its request id): a zero-filled tail, as
        # some filesystems leave after a power loss, would otherwise decode as records and poison every batch.
        if length == 0 or length > _MAX_ENTRY or start + length > end:
            break
        payload = bytes(view[start : start + length])
        if zlib.crc32(payload) != crc:
            break
        entries.append(payload)
        offset = start + length
    skipped = end - offset
    return Decoded(entries, 1 if skipped else 0, skipped)


@dataclass(slots=True)
class Segment:
    """A segment claimed for replay: locked by this process until deleted or released."""

    path: str
    fd: int
    size: int
    entries: list[bytes]
    torn: int
    skipped_bytes: int


@dataclass(slots=True)
class _Active:
    path: str
    fd: int
    size: int = 0
    records: int = 0


@dataclass(slots=True)
class _Listing:
    paths: list[str] = field(default_factory=list)  # oldest first
    total_bytes: int = 0
    max_own_seq: int = -1


class Spool:
    """Segments of usage records in one directory, bounded in total size; see the module docstring for the format.

    Appends are one `write` call each (no fsync); a segment is fsynced when it is sealed by `seal` or `close`, or by
    `sync` after the append path rotated it. Nothing here raises `OSError` to its caller: a failed append returns
    False and leaves the reason in `last_error`.
    """

    def __init__(self, directory: str, max_bytes: int, *, segment_bytes: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(_MAX_SEGMENT, max(_MIN_SEGMENT, max_bytes // 8))
        self.last_error = ""
        self._pid = os.getpid()
        self._seq = 0
        self._bytes = 0
        self._active: _Active | None = None
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
        """Append one serialized record; False when it would pass `max_bytes` or the disk refused it."""
        entry = frame(payload)
        if self._bytes + len(entry) > self.max_bytes:
            self.last_error = f"over spool_max_bytes ({self.max_bytes})"
            return False
        active = self._active
        try:
            if active is None or (active.records and active.size + len(entry) > self.segment_bytes):
                active = self._rotate()
            written = os.write(active.fd, entry)
            if written != len(entry):
                raise OSError(28, "short write (disk full?)")
        except OSError as exc:
            self.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
            self._abandon()
            return False
        active.size += len(entry)
        active.records += 1
        self._bytes += len(entry)
        return True

    def seal(self) -> None:
        """Fsync and unlock the active segment, so it can be claimed; the next append starts a new one."""
        active, self._active = self._active, None
        if active is None:
            return
        try:
            os.fsync(active.fd)
        except OSError as exc:
            log.warning("usage spool: fsync of %s failed: %s", active.path, exc)
        os.close(active.fd)
        if active.records == 0:
            self._unlink(active.path, active.size)

    def sync(self) -> None:
        """Fsync the segments the append path rotated without waiting for the disk, and the directory."""
        if self._unsynced:
            paths, self._unsynced = self._unsynced, []
            _fsync_quietly((*paths, self.directory))

    def close(self) -> None:
        """Seal the active segment and make everything written durable; appends after it start a new segment."""
        self.seal()
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

    def delete(self, segment: Segment) -> None:
        """Delete a claimed segment whose every record was delivered, then let go of its lock."""
        self._unlink(segment.path, segment.size)
        os.close(segment.fd)

    def release(self, segment: Segment) -> None:
        """Let go of a claimed segment without deleting it: it is replayed again later, by any process."""
        os.close(segment.fd)

    def _rotate(self) -> _Active:
        previous, self._active = self._active, None
        if previous is not None:
            # On the caller's path: close now, fsync later from the background task (`sync`).
            os.close(previous.fd)
            self._unsynced.append(previous.path)
        self._active = self._create()
        return self._active

    def _create(self) -> _Active:
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
                return _Active(path, fd)
            os.close(fd)
        raise OSError(17, "no free segment name")

    def _abandon(self) -> None:
        active, self._active = self._active, None
        if active is None:
            return
        with contextlib.suppress(OSError):  # best effort: a torn tail is also handled by the reader
            os.ftruncate(active.fd, active.size)
        os.close(active.fd)
        if active.records:
            self._unsynced.append(active.path)
        else:
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
        active = self._active.path if self._active else None
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
                    if entry.path != active:
                        found.append((stat.st_mtime_ns, entry.name, stat.st_size))
        listing.paths = [os.path.join(self.directory, name) for _, name, _ in sorted(found)]
        return listing


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


def _try_claim(path: str) -> Segment | None:
    try:
        fd = os.open(path, os.O_RDONLY)
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
    if decoded.torn:
        log.warning(
            "usage spool: %s ends in a torn or corrupt entry: %d bytes skipped, %d records kept",
            path,
            decoded.skipped_bytes,
            len(decoded.entries),
        )
    return Segment(path, fd, len(data), decoded.entries, decoded.torn, decoded.skipped_bytes)


def _fsync_quietly(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # already replayed and deleted: nothing left to make durable
        except OSError as exc:
            log.warning("usage spool: cannot open %s to fsync it: %s", path, exc)
            continue
        try:
            os.fsync(fd)
        except OSError as exc:
            log.warning("usage spool: fsync of %s failed: %s", path, exc)
        finally:
            os.close(fd)
