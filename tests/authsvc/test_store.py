"""`KeyStore`: lookups by raw key, expiry on the injected clock, and reloads that never drop the serving keys."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from authsvc.keyfile import KeyFile, KeyFileError, save_key_file
from authsvc.store import KeyStatus, KeyStore
from tests.authsvc.helpers import START, FakeClock, Keys, new_key


def test_a_missing_file_is_an_error_at_startup(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        KeyStore(tmp_path / "nope.yaml")


def test_a_bad_file_is_an_error_at_startup(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys: [{id: x}]\n")
    with pytest.raises(KeyFileError, match=r"keys\[0\]"):
        KeyStore(path)


def test_lookup_outcomes(keys: Keys, clock: FakeClock) -> None:
    store = KeyStore(keys.path, now=clock.now)
    alice = store.lookup(keys.raw["alice"])
    assert (alice.status, alice.key_id, alice.record) == (
        KeyStatus.VALID,
        keys.records["alice"].id,
        keys.records["alice"],
    )
    assert store.lookup(keys.raw["expired"]).status is KeyStatus.EXPIRED
    assert store.lookup(keys.raw["revoked"]).status is KeyStatus.REVOKED
    assert store.lookup("").status is KeyStatus.MISSING
    assert store.lookup("   ").status is KeyStatus.MISSING
    assert store.lookup(f" {keys.raw['bob']}\n").status is KeyStatus.VALID  # surrounding whitespace is not the key


def test_invalid_keys_all_look_the_same(keys: Keys, clock: FakeClock) -> None:
    store = KeyStore(keys.path, now=clock.now)
    alice_id = keys.records["alice"].id
    malformed = store.lookup("sk-not-ours")
    unknown = store.lookup(new_key()[0])
    wrong_secret = store.lookup(f"tgk_{alice_id}_{'A' * 43}")
    assert {malformed.status, unknown.status, wrong_secret.status} == {KeyStatus.INVALID}
    assert (malformed.record, unknown.record, wrong_secret.record) == (None, None, None)
    assert wrong_secret.key_id == alice_id


def test_a_wrong_secret_on_an_expired_key_is_just_invalid(keys: Keys, clock: FakeClock) -> None:
    # Expired and revoked are told only to a caller who holds the secret: they say the id exists.
    store = KeyStore(keys.path, now=clock.now)
    assert store.lookup(f"tgk_{keys.records['expired'].id}_wrong").status is KeyStatus.INVALID
    assert store.lookup(f"tgk_{keys.records['revoked'].id}_wrong").status is KeyStatus.INVALID


def test_expiry_follows_the_injected_clock(keys: Keys, clock: FakeClock) -> None:
    store = KeyStore(keys.path, now=clock.now)
    expires = keys.records["alice"].expires
    assert expires is not None
    clock.current = expires - (expires - START) / 1000
    assert store.lookup(keys.raw["alice"]).status is KeyStatus.VALID
    clock.current = expires  # the expiry instant itself is past
    assert store.lookup(keys.raw["alice"]).status is KeyStatus.EXPIRED


def test_reload_only_when_the_file_changed(keys: Keys) -> None:
    store = KeyStore(keys.path)
    assert not store.reload()
    raw, record = new_key("erin")
    save_key_file(keys.path, keys.file().with_key(record))
    assert store.lookup(raw).status is KeyStatus.INVALID
    assert store.reload()
    assert store.lookup(raw).status is KeyStatus.VALID
    assert not store.reload()
    assert store.reload(force=True)


def test_an_edit_in_place_is_noticed(keys: Keys) -> None:
    # Editors that rewrite the file in place keep its inode: size or mtime tells.
    store = KeyStore(keys.path)
    raw, record = new_key("erin")
    keys.path.write_text(keys.path.read_text() + f"- id: {record.id}\n  hash: {record.hash}\n  user: erin\n")
    assert store.reload()
    assert store.lookup(raw).status is KeyStatus.VALID


def test_a_bad_file_is_refused_once_and_the_old_keys_keep_serving(keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    store = KeyStore(keys.path)
    keys.path.write_text("keys: [{id: nope}]\n")
    with caplog.at_level(logging.ERROR, "tollgate.authsvc"):
        assert not store.reload()
        assert not store.reload()  # the same bad version is not retried or logged again
    assert [r.getMessage() for r in caplog.records] == [
        f"key file {keys.path} refused: keys[0].hash: required; the old keys keep serving"
    ]
    assert store.lookup(keys.raw["alice"]).status is KeyStatus.VALID
    assert store.keys == keys.file()
    save_key_file(keys.path, KeyFile())  # a good file again is taken at once
    assert store.reload()
    assert store.lookup(keys.raw["alice"]).status is KeyStatus.INVALID


def test_an_emptied_file_does_not_revoke_every_key(keys: Keys) -> None:
    store = KeyStore(keys.path)
    keys.path.write_text("")
    assert not store.reload()
    assert store.lookup(keys.raw["alice"]).status is KeyStatus.VALID


def test_a_removed_file_keeps_the_old_keys_with_one_warning(keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    store = KeyStore(keys.path)
    os.unlink(keys.path)
    with caplog.at_level(logging.WARNING, "tollgate.authsvc"):
        assert not store.reload()
        assert not store.reload(force=True)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "is gone" in caplog.records[0].getMessage()
    assert store.lookup(keys.raw["alice"]).status is KeyStatus.VALID
    raw, record = new_key("erin")
    save_key_file(keys.path, KeyFile((record,)))  # back again: read as soon as it is seen
    assert store.reload()
    assert store.lookup(raw).status is KeyStatus.VALID


def test_a_transient_read_error_is_retried_at_the_next_poll(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore(keys.path)
    raw, record = new_key("erin")
    save_key_file(keys.path, keys.file().with_key(record))
    real_read = KeyStore._read

    def too_many_files(self: KeyStore) -> object:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(KeyStore, "_read", too_many_files)
    assert not store.reload()
    monkeypatch.setattr(KeyStore, "_read", real_read)
    assert store.reload()  # the same version of the file, tried again
    assert store.lookup(raw).status is KeyStatus.VALID
