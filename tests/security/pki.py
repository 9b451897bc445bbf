"""Certificates made at test time with trustme: a CA, server and client certificates written as PEM files, and
rotation as cert-manager does it (new files replace the old ones in place, atomically)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trustme

from gateway.config.tls import ClientTLS, ServerTLS

HOST = "localhost"  # every server certificate names it; clients connect to 127.0.0.1 and expect this name


@dataclass
class Leaf:
    """A certificate chain and its key on disk."""

    cert: Path
    key: Path


class Pki:
    """A test CA that writes its certificates under `root`."""

    def __init__(self, root: Path, name: str = "ca") -> None:
        self.root = root
        self.ca = trustme.CA(organization_name=f"tollgate test {name}")
        root.mkdir(parents=True, exist_ok=True)
        self.ca_file = root / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.name = name

    def leaf(self, name: str, *identities: str) -> Leaf:
        """A certificate for `identities` (default: localhost and 127.0.0.1) at `<name>.crt` / `<name>.key`."""
        issued = self.ca.issue_cert(*(identities or (HOST, "127.0.0.1")))
        leaf = Leaf(self.root / f"{name}.crt", self.root / f"{name}.key")
        _replace(leaf.cert, b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        _replace(leaf.key, issued.private_key_pem.bytes())
        return leaf

    def server_tls(self, name: str = "server", *, mutual: bool = False) -> ServerTLS:
        leaf = self.leaf(name)
        return ServerTLS(cert=str(leaf.cert), key=str(leaf.key), client_ca=str(self.ca_file) if mutual else "")

    def client_tls(self, name: str = "client", *, with_cert: bool = True) -> ClientTLS:
        if not with_cert:
            return ClientTLS(ca=str(self.ca_file), server_name=HOST)
        leaf = self.leaf(name, f"{name}.tollgate.test")
        return ClientTLS(ca=str(self.ca_file), cert=str(leaf.cert), key=str(leaf.key), server_name=HOST)

    def rotate_to(self, other: Pki, tls: ServerTLS) -> None:
        """Replace the server certificate in `tls`'s files with one `other` issued, as a rotation would."""
        issued = other.ca.issue_cert(HOST, "127.0.0.1")
        _replace(Path(tls.key), issued.private_key_pem.bytes())
        _replace(Path(tls.cert), b"".join(blob.bytes() for blob in issued.cert_chain_pems))

    def reissue(self, cert: str, key: str, *identities: str) -> None:
        """Write a certificate this CA issued for `identities` over the files `cert` and `key`, key first."""
        issued = self.ca.issue_cert(*identities)
        _replace(Path(key), issued.private_key_pem.bytes())
        _replace(Path(cert), b"".join(blob.bytes() for blob in issued.cert_chain_pems))

    def replace_key_only(self, tls: ServerTLS) -> None:
        """Put a fresh key in `tls`'s key file, leaving a certificate that does not match it."""
        _replace(Path(tls.key), self.ca.issue_cert(HOST).private_key_pem.bytes())


def _replace(path: Path, data: bytes) -> None:
    fresh = path.with_suffix(path.suffix + ".new")
    fresh.write_bytes(data)
    os.replace(fresh, path)
