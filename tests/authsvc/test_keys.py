"""API keys: the `tgk_<id>_<secret>` format, the salted hash, and verification."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from authsvc.keys import generate_key, hash_secret, parse_key, verify_secret, verify_unknown


def test_generated_key_has_the_documented_format() -> None:
    key = generate_key()
    assert re.fullmatch(r"tgk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", key.raw)
    assert key.raw.split("_", 2)[1] == key.id
    assert re.fullmatch(r"sha256\$[0-9a-f]{32}\$[0-9a-f]{64}", key.hash)


def test_generated_keys_differ() -> None:
    made = [generate_key() for _ in range(50)]
    assert len({k.id for k in made}) == 50
    assert len({k.raw for k in made}) == 50


def test_the_raw_key_never_prints() -> None:
    key = generate_key()
    assert key.raw not in repr(key)
    assert key.hash not in repr(key)


def test_parse_splits_at_the_first_two_underscores() -> None:
    # URL-safe base64 may contain `_`: the secret keeps them.
    assert parse_key("tgk_0123456789abcdef_a_b_c") == ("0123456789abcdef", "a_b_c")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "tgk",
        "tgk_0123456789abcdef",
        "tgk_0123456789abcdef_",  # no secret
        "sk_0123456789abcdef_secret",  # another prefix
        "TGK_0123456789abcdef_secret",
        "tgk_0123456789ABCDEF_secret",  # the id is lowercase hex
        "tgk_0123456789abcde_secret",  # 15 characters
        "tgk_0123456789abcdefa_secret",  # 17 characters
        "tgk_0123456789abcdeg_secret",  # not hex
        "tgk__0123456789abcdef_secret",
        "tgk_0123456789abcdef_" + "x" * 300,  # longer than any key
        "Bearer tgk_0123456789abcdef_secret",
    ],
)
def test_malformed_keys_do_not_parse(raw: str) -> None:
    assert parse_key(raw) is None


def test_hash_is_sha256_of_salt_and_secret() -> None:
    salt = bytes(range(16))
    stored = hash_secret("s3cret", salt)
    assert stored == f"sha256${salt.hex()}${hashlib.sha256(salt + b's3cret').hexdigest()}"


def test_each_hash_has_its_own_salt() -> None:
    assert hash_secret("same") != hash_secret("same")


def test_verify_accepts_the_secret_and_nothing_else() -> None:
    key = generate_key()
    _, _, secret = key.raw.split("_", 2)
    assert verify_secret(secret, key.hash)
    assert not verify_secret(secret + "x", key.hash)
    assert not verify_secret(secret[:-1], key.hash)
    assert not verify_secret("", key.hash)
    assert not verify_secret(secret, hash_secret("other"))


@pytest.mark.parametrize("stored", ["", "sha256$$", "md5$00$00", f"sha256${'0' * 32}${'0' * 63}", "plaintext"])
def test_verify_refuses_a_malformed_hash(stored: str) -> None:
    assert not verify_secret("anything", stored)


def test_unknown_id_takes_the_same_path_as_a_wrong_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # The constant-time path for an unknown id: the same hash and comparison as for a key that exists.
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    key = generate_key()
    assert not verify_secret("wrong", key.hash)
    assert not verify_unknown("wrong")
    assert len(compared) == 2
    assert [len(a) for a, _ in compared] == [64, 64]
    assert [len(b) for _, b in compared] == [64, 64]
