"""Reading TLS settings: the top-level `tls:` section and the `tls:` of `auth:` and `stats:`. A file that is named
but cannot be read is refused here, with its path, so a typo fails at startup and not at the first handshake."""

from __future__ import annotations

import os
from typing import Any

from gateway.config.fields import ConfigError, _Node, _str
from gateway.config.tls import ClientTLS, ServerTLS, TLSConfig


def _file(value: Any, path: str) -> str:
    name = _str(value, path)
    if not os.access(name, os.R_OK) or not os.path.isfile(name):
        raise ConfigError(f"{path}: cannot read the file {name!r}")
    return name


def server_tls(value: Any, path: str) -> ServerTLS:
    """`{cert, key, client_ca?}`."""
    node = _Node(value, path)
    tls = ServerTLS(
        cert=node.require("cert", _file), key=node.require("key", _file), client_ca=node.get("client_ca", _file, "")
    )
    node.done()
    return tls


def client_tls(value: Any, path: str) -> ClientTLS:
    """`{ca?, cert?, key?, server_name?}`; `true` (or `{}`) is TLS with the system's roots."""
    if value is True:
        return ClientTLS()
    node = _Node(value, path)
    tls = ClientTLS(
        ca=node.get("ca", _file, ""),
        cert=node.get("cert", _file, ""),
        key=node.get("key", _file, ""),
        server_name=node.get("server_name", _str, ""),
    )
    node.done()
    if bool(tls.cert) != bool(tls.key):
        raise ConfigError(f"{path}: cert and key go together (a client certificate needs its key)")
    return tls


def tls_config(value: Any, path: str) -> TLSConfig:
    """The top-level `tls:` section."""
    node = _Node(value, path)
    tls = TLSConfig(
        http=node.get("http", server_tls, None),
        grpc=node.get("grpc", server_tls, None),
        engine=node.get("engine", client_tls, None),
    )
    node.done()
    return tls
