"""TLS settings: certificate files for a server, and what a client trusts and presents (see docs/tls.md).

Only paths live here; the files are read (and re-read when they change on disk) by `gateway.tls`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """A server's certificate chain and key; with `client_ca`, clients must present a certificate it signed (mTLS)."""

    cert: str
    key: str
    client_ca: str = ""


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """How a gRPC client reaches a TLS server: the CA it trusts (empty: the system's roots), the certificate and key
    it presents for mutual TLS (both or neither), and the name to expect in the server's certificate (empty: the
    host of the address)."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """The `tls:` section: HTTPS on the front door, TLS on the engine's gRPC port, and the split front door's
    channel to the engine. None: plaintext, as before."""

    http: ServerTLS | None = None
    grpc: ServerTLS | None = None
    engine: ClientTLS | None = None
