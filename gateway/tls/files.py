"""`WatchedFiles`: certificate files read together, and whether they changed on disk since they were last used.

A check is one `stat` per file (modification time, size, inode), cheap enough for every new connection. A changed set
that cannot be used yet (a rotation caught half-written) is refused once and tried again when it changes again.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from gateway.config.tls import ServerTLS

log = logging.getLogger("tollgate.tls")

Stamp = tuple[tuple[int, int, int], ...]


class WatchedFiles:
    """A set of files read together, and whether any of them changed on disk since they were last accepted."""

    def __init__(self, *paths: str) -> None:
        self.paths = tuple(p for p in paths if p)
        self.accepted = self.stamp()
        self._refused: Stamp | None = None

    def stamp(self) -> Stamp:
        """Each file's (modification time, size, inode); a file that cannot be read stamps as zeros."""
        stamps = []
        for path in self.paths:
            try:
                st = os.stat(path)  # follows symlinks: a Kubernetes Secret volume swaps a `..data` link
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def changed(self) -> Stamp | None:
        """The new stamp when the files changed since they were accepted (and not already refused as they are)."""
        stamp = self.stamp()
        return stamp if stamp not in (self.accepted, self._refused) else None

    def accept(self, stamp: Stamp) -> None:
        """The files as stamped are in use now."""
        self.accepted, self._refused = stamp, None

    def refuse(self, stamp: Stamp, error: Exception) -> None:
        """The files as stamped could not be used; say so once, and try again when they change again."""
        self._refused = stamp
        log.warning("TLS files %s changed but cannot be used yet (%s); keeping the ones in use", self.paths, error)


def read_file(path: str) -> bytes | None:
    """The file's bytes; None for no file named."""
    return Path(path).read_bytes() if path else None


def checked_server_context(tls: ServerTLS, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """A server context with the chain and key loaded (which checks that they match) and the client CA, if any;
    offering the `alpn` protocols."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(list(alpn))
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca:
        context.load_verify_locations(tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
