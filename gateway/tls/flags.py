"""TLS flags for the reference servers' commands (`--tls-cert`, `--tls-key`, `--tls-client-ca`) and their clients'
(`--tls-ca`, `--tls-cert`, `--tls-key`, `--tls-server-name`)."""

from __future__ import annotations

import argparse
import os

from gateway.config.tls import ClientTLS, ServerTLS


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
    _check_files(("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca))
    return ServerTLS(cert=cert, key=key, client_ca=client_ca or "")


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """`--tls-ca`, `--tls-cert`, `--tls-key` and `--tls-server-name` for a command that calls a server."""
    parser.add_argument("--tls-ca", metavar="FILE", help="use TLS, trusting this CA (PEM)")
    parser.add_argument("--tls-cert", metavar="FILE", help="present this client certificate (mutual TLS)")
    parser.add_argument("--tls-key", metavar="FILE", help="the client certificate's private key")
    parser.add_argument("--tls-server-name", metavar="NAME", help="the name in the server's certificate")


def client_tls_from_flags(args: argparse.Namespace) -> ClientTLS | None:
    """The flags' TLS settings (None: plaintext); raises `ValueError` naming a bad flag."""
    ca, cert, key, name = args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name
    if not (ca or cert or key or name):
        return None
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert and --tls-key go together")
    _check_files(("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key))
    return ClientTLS(ca=ca or "", cert=cert or "", key=key or "", server_name=name or "")


def _check_files(*flags: tuple[str, str | None]) -> None:
    for flag, path in flags:
        if path and not os.path.isfile(path):
            raise ValueError(f"{flag}: cannot read the file {path!r}")
