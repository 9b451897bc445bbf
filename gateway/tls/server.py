"""TLS for servers: grpc's dynamic server credentials and the HTTPS front door's `ssl.SSLContext`, both following
their certificate files on disk.

gRPC servers use grpc's dynamic server credentials, whose fetcher runs before every handshake; the HTTPS context
swaps in a freshly loaded context from its SNI callback, which OpenSSL calls for every ClientHello (with or without a
server name). Either way a changed set of files is loaded and checked as a pair before it replaces the old one, and
connections already open keep the certificate they started with.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import grpc

from gateway.config.tls import ServerTLS
from gateway.tls.files import WatchedFiles, checked_server_context, read_file

log = logging.getLogger("tollgate.tls")


# ---------------------------------------------------------------------------------------------------- gRPC servers


class _GrpcCertificates:
    """The fetcher behind grpc's dynamic server credentials: a new configuration when the files changed, else None."""

    def __init__(self, tls: ServerTLS) -> None:
        self._tls = tls
        self._files = WatchedFiles(tls.cert, tls.key, tls.client_ca)

    def load(self) -> Any:
        checked_server_context(self._tls)  # a mismatched pair fails here, not in the middle of a handshake
        return grpc.ssl_server_certificate_configuration(
            [(Path(self._tls.key).read_bytes(), Path(self._tls.cert).read_bytes())],
            root_certificates=read_file(self._tls.client_ca),
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


# ---------------------------------------------------------------------------------------------------- HTTPS


def http_server_context(tls: ServerTLS) -> ssl.SSLContext:
    """The front door's context. Each new connection's ClientHello checks the files; changed ones are loaded into a
    fresh context that this and later connections use (`load_cert_chain` afresh, as the file is rotated)."""
    files = WatchedFiles(tls.cert, tls.key, tls.client_ca)
    base = checked_server_context(tls)
    current = [base]

    def on_hello(connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        stamp = files.changed()
        if stamp is not None:
            try:
                current[0] = checked_server_context(tls)
            except (OSError, ssl.SSLError) as exc:
                files.refuse(stamp, exc)
            else:
                files.accept(stamp)
                log.info("TLS certificate reloaded from %s", tls.cert)
        if current[0] is not base:
            connection.context = current[0]

    base.sni_callback = on_hello
    return base
