"""TLS for every hop: credentials for gRPC servers and clients and an `ssl.SSLContext` for the HTTPS front door, built
from the certificate files the configuration names (docs/tls.md).

Servers re-read their files when they change on disk, as cert-manager rotates a Secret, without a restart: each new
connection first checks the files' stamps (modification time, size, inode: one `stat` each), and a changed set is
loaded and checked as a pair before it replaces the old one, so a rotation caught half-written keeps the old
certificate until the new one is whole. Connections already open keep the certificate they started with.

gRPC servers use grpc's dynamic server credentials, whose fetcher runs before every handshake; the HTTPS context
swaps in a freshly loaded context from its SNI callback, which OpenSSL calls for every ClientHello (with or without
a server name).
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from gateway.config.tls import ClientTLS, ServerTLS

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


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _checked_server_context(tls: ServerTLS) -> ssl.SSLContext:
    """A server context with the chain and key loaded (which checks that they match) and the client CA, if any."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca:
        context.load_verify_locations(tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# ---------------------------------------------------------------------------------------------------- gRPC servers


class _GrpcCertificates:
    """The fetcher behind grpc's dynamic server credentials: a new configuration when the files changed, else None."""

    def __init__(self, tls: ServerTLS) -> None:
        self._tls = tls
        self._files = WatchedFiles(tls.cert, tls.key, tls.client_ca)

    def load(self) -> Any:
        _checked_server_context(self._tls)  # a mismatched pair fails here, not in the middle of a handshake
        return grpc.ssl_server_certificate_configuration(
            [(Path(self._tls.key).read_bytes(), Path(self._tls.cert).read_bytes())],
            root_certificates=_read(self._tls.client_ca),
        )

    def __call__(self) -> Any:
        stamp = self._files.changed()
        if stamp is None:
            return None
        try:
            config = self.load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._files.refuse(stamp, exc)
            return None
        self._files.accept(stamp)
        log.info("TLS certificate reloaded from %s", self._tls.cert)
        return config


def grpc_server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port` that follow the files on disk; with a client CA, a client without a
    certificate it signed is refused during the handshake."""
    certificates = _GrpcCertificates(tls)
    return grpc.dynamic_ssl_server_credentials(
        certificates.load(), certificates, require_client_authentication=bool(tls.client_ca)
    )


# ---------------------------------------------------------------------------------------------------- gRPC clients


def grpc_channel_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    """What a client trusts (`ca`, else the system's roots) and presents (`cert` and `key`, for mutual TLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca), private_key=_read(tls.key), certificate_chain=_read(tls.cert)
    )


def open_channel(target: str, tls: ClientTLS | None, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`: plaintext when `tls` is None, else TLS as configured."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    named = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.aio.secure_channel(target, grpc_channel_credentials(tls), options=[*options, *named])


# ---------------------------------------------------------------------------------------------------- HTTPS


def http_server_context(tls: ServerTLS) -> ssl.SSLContext:
    """The front door's context. Each new connection's ClientHello checks the files; changed ones are loaded into a
    fresh context that this and later connections use (`load_cert_chain` afresh, as the file is rotated)."""
    files = WatchedFiles(tls.cert, tls.key, tls.client_ca)
    base = _checked_server_context(tls)
    current = [base]

    def on_hello(connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        stamp = files.changed()
        if stamp is not None:
            try:
                current[0] = _checked_server_context(tls)
            except (OSError, ssl.SSLError) as exc:
                files.refuse(stamp, exc)
            else:
                files.accept(stamp)
                log.info("TLS certificate reloaded from %s", tls.cert)
        if current[0] is not base:
            connection.context = current[0]

    base.sni_callback = on_hello
    return base


# ---------------------------------------------------------------------------------------------------- command lines


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """`--tls-cert`, `--tls-key` and `--tls-client-ca` for a server command (`tollgate authsvc`, `statssvc`)."""
    parser.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    parser.add_argument("--tls-client-ca", metavar="FILE", help="require client certificates signed by this CA (mTLS)")


def server_tls_from_flags(args: argparse.Namespace) -> ServerTLS | None:
    """The flags' TLS settings (None: plaintext); raises `ValueError` naming the flag that is missing or unreadable."""
    cert, key, client_ca = args.tls_cert, args.tls_key, args.tls_client_ca
    if not (cert or key or client_ca):
        return None
    if not (cert and key):
        raise ValueError("--tls-cert and --tls-key go together")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path and not os.path.isfile(path):
            raise ValueError(f"{flag}: cannot read the file {path!r}")
    return ServerTLS(cert=cert, key=key, client_ca=client_ca or "")
