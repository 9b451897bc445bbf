"""TLS for servers: the `ssl.SSLContext` of the HTTPS front door and of gRPC servers, following their certificate
files on disk.

The context swaps in a freshly loaded one from its SNI callback, which OpenSSL calls for every ClientHello (with or
without a server name): a changed set of files is loaded and checked as a pair before it replaces the old one, and
connections already open keep the certificate they started with.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence

from gateway.config.tls import ServerTLS
from gateway.tls.files import WatchedFiles, checked_server_context

log = logging.getLogger("tollgate.tls")


def http_server_context(tls: ServerTLS, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """The front door's context (`alpn`: the protocols it offers by ALPN, if any). Each new connection's ClientHello
    checks the files; changed ones are loaded into a fresh context that this and later connections use
    (`load_cert_chain` afresh, as the file is rotated)."""
    files = WatchedFiles(tls.cert, tls.key, tls.client_ca)
    base = checked_server_context(tls, alpn)
    current = [base]

    def on_hello(connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        stamp = files.changed()
        if stamp is not None:
            try:
                current[0] = checked_server_context(tls, alpn)
            except (OSError, ssl.SSLError) as exc:
                files.refuse(stamp, exc)
            else:
                files.accept(stamp)
                log.info("TLS certificate reloaded from %s", tls.cert)
        if current[0] is not base:
            connection.context = current[0]

    base.sni_callback = on_hello
    return base


def grpc_server_context(tls: ServerTLS) -> ssl.SSLContext:
    """A gRPC server's context (`gateway.wire_server`): the front door's, offering HTTP/2 by ALPN as gRPC clients
    require; with a client CA, a client without a certificate it signed is refused during the handshake."""
    return http_server_context(tls, ("h2",))
