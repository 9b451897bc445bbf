"""TLS for every hop: credentials for gRPC servers and clients and an `ssl.SSLContext` for the HTTPS front door, built
from the certificate files the configuration names (docs/tls.md). Servers and clients alike re-read their files when
they change on disk, as cert-manager rotates a Secret, without a restart.

`files` (watching them), `server` (the HTTPS and gRPC servers' contexts), `client` (channels that reopen on
new files), `flags` (the reference servers' command-line flags).
"""

from gateway.tls.client import RenewingChannel, grpc_channel_credentials, grpc_client_context, open_channel
from gateway.tls.files import WatchedFiles
from gateway.tls.flags import add_client_flags, add_server_flags, client_tls_from_flags, server_tls_from_flags
from gateway.tls.server import grpc_server_context, http_server_context

__all__ = [
    "RenewingChannel",
    "WatchedFiles",
    "add_client_flags",
    "add_server_flags",
    "client_tls_from_flags",
    "grpc_channel_credentials",
    "grpc_client_context",
    "grpc_server_context",
    "http_server_context",
    "open_channel",
    "server_tls_from_flags",
]
