"""`--tls-cert`, `--tls-key` and `--tls-client-ca` for the reference servers' commands."""

from __future__ import annotations

import argparse
import os

from gateway.config.tls import ServerTLS


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
