"""API keys: the format clients send (`tgk_<id>_<secret>`), and the salted hash that is all the server stores.

The id is not secret: logs, metrics and usage records name it. The secret is 256 random bits, shown once when the key
is made and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

KEY_PREFIX = "tgk"
ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
HASH_PATTERN = re.compile(r"^sha256\$([0-9a-f]{32})\$([0-9a-f]{64})$")
# Far longer than any key we make; a longer "key" is refused before any hashing.
MAX_KEY_LENGTH = 256
# What an unknown id is compared against, so that it costs the same as a wrong secret.
_DUMMY_HASH = f"sha256${'0' * 32}${'0' * 64}"


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key: `raw` goes to its owner once; only `hash` is stored."""

    id: str
    raw: str = field(repr=False)
    hash: str = field(repr=False)


def generate_key() -> NewKey:
    """A new random key and the hash of its secret."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewKey(id=key_id, raw=f"{KEY_PREFIX}_{key_id}_{secret}", hash=hash_secret(secret))


def parse_key(raw: str) -> tuple[str, str] | None:
    """`(id, secret)` from `tgk_<id>_<secret>`, or None when `raw` is not a well-formed key."""
    if len(raw) > MAX_KEY_LENGTH:
        return None
    parts = raw.split("_", 2)  # the secret is URL-safe base64 and may itself contain `_`
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not ID_PATTERN.match(parts[1]) or not parts[2]:
        return None
    return parts[1], parts[2]


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """`sha256$<salt hex>$<hex of sha256(salt + secret)>`, with a fresh 16-byte salt unless one is given."""
    # The secret is 256 random bits, so a slow password KDF would only add latency: there is nothing to brute-force.
    salt = secrets.token_bytes(16) if salt is None else salt
    return f"sha256${salt.hex()}${hashlib.sha256(salt + secret.encode()).hexdigest()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether `secret` matches the stored hash, compared in constant time."""
    match = HASH_PATTERN.match(stored)
    if match is None:
        return False
    salt, expected = match.groups()
    actual = hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()
    return hmac.compare_digest(actual.encode(), expected.encode())


def verify_unknown(secret: str) -> bool:
    """The work of `verify_secret` for a key id that does not exist, so timing does not tell which ids do; False."""
    verify_secret(secret, _DUMMY_HASH)
    return False
