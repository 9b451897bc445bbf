"""`KeyStore`: the keys of one file, looked up by raw API key, and reloaded when the file changes.

Reloads swap the whole key set at once, so a lookup sees either the old keys or the new ones. A file that does not
validate is refused with an error log and the old keys keep serving; so does a file that disappears.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from authsvc.keyfile import KeyFile, KeyFileError, KeyRecord, parse_key_file, utc_now
from authsvc.keys import parse_key, verify_secret, verify_unknown

log = logging.getLogger("tollgate.authsvc")

# What identifies one version of the file: a replaced file has a new inode, an edited one a new mtime or size.
_Signature = tuple[int, int, int, int]


class KeyStatus(enum.Enum):
    """What a lookup found."""

    MISSING = "missing"  # no key was sent
    INVALID = "invalid"  # malformed, unknown id, or wrong secret: the caller is told the same for all three
    EXPIRED = "expired"
    REVOKED = "revoked"
    VALID = "valid"


_BY_RECORD_STATUS = {"revoked": KeyStatus.REVOKED, "expired": KeyStatus.EXPIRED, "active": KeyStatus.VALID}


@dataclass(frozen=True, slots=True)
class Lookup:
    """The outcome of a lookup: the status, the id when the key parsed, and the record when the secret matched."""

    status: KeyStatus
    key_id: str = ""
    record: KeyRecord | None = None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    keys: KeyFile
    by_id: Mapping[str, KeyRecord]
    signature: _Signature


class KeyStore:
    """The current keys of `path`; the file must exist and validate when the store is made."""

    def __init__(self, path: str | Path, *, now: Callable[[], datetime] = utc_now) -> None:
        self.path = Path(path)
        self._now = now
        self._reload_lock = threading.Lock()  # a SIGHUP reload and a polled one may overlap
        self._snapshot = self._read()
        self._seen = self._snapshot.signature  # the last version tried, good or bad, so a bad one is logged once
        self._missing = False

    @property
    def keys(self) -> KeyFile:
        """The keys now serving."""
        return self._snapshot.keys

    def lookup(self, raw_key: str) -> Lookup:
        """Authenticate `raw_key` (as the client sent it) against the current keys."""
        raw = raw_key.strip()
        if not raw:
            return Lookup(KeyStatus.MISSING)
        parsed = parse_key(raw)
        if parsed is None:
            return Lookup(KeyStatus.INVALID)
        key_id, secret = parsed
        record = self._snapshot.by_id.get(key_id)
        if record is None:
            verify_unknown(secret)
            return Lookup(KeyStatus.INVALID, key_id)
        if not verify_secret(secret, record.hash):
            return Lookup(KeyStatus.INVALID, key_id)
        return Lookup(_BY_RECORD_STATUS[record.status(self._now())], key_id, record)

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed since the last try (always, with `force`); True when new keys serve.

        Blocking file I/O: from async code, run it in a thread (`asyncio.to_thread`).
        """
        with self._reload_lock:
            try:
                signature = _signature(os.stat(self.path))
            except FileNotFoundError:
                if not self._missing:
                    log.warning("key file %s is gone: the keys already loaded keep serving", self.path)
                    self._missing = True
                return False
            except OSError as exc:
                log.error("cannot read key file %s: %s; the old keys keep serving", self.path, exc)
                return False
            self._missing = False
            if signature == self._seen and not force:
                return False
            try:
                snapshot = self._read()
            except KeyFileError as exc:
                self._seen = signature  # a bad version is reported once, not at every poll
                log.error("key file %s refused: %s; the old keys keep serving", self.path, exc)
                return False
            except OSError as exc:  # transient (EMFILE, EIO): the same version is tried again at the next poll
                log.error("cannot read key file %s: %s; the old keys keep serving", self.path, exc)
                return False
            self._seen = snapshot.signature
            self._snapshot = snapshot  # one assignment: a lookup sees the old keys or the new, never a mix
            log.info("key file %s reloaded: %d keys", self.path, len(snapshot.keys.keys))
            return True

    async def watch(self, interval: float) -> None:
        """Reload whenever the file changes, checking every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload)
            except Exception:  # a bug in one poll must not end reloading for the life of the server
                log.exception("key file %s: reload failed", self.path)

    def _read(self) -> _Snapshot:
        with open(self.path, encoding="utf-8") as f:
            # The version read is the one this descriptor opened; a change after this is seen by the next poll.
            signature = _signature(os.fstat(f.fileno()))
            keys = parse_key_file(f.read())
        return _Snapshot(keys, {k.id: k for k in keys.keys}, signature)


def _signature(st: os.stat_result) -> _Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
