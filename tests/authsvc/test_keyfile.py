"""The key file: validation with the path of each bad field, round trips, atomic saves and concurrent writers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authsvc.keyfile import (
    Budget,
    KeyFile,
    KeyFileError,
    KeyRecord,
    Limits,
    dump_key_file,
    load_key_file,
    modify_key_file,
    parse_key_file,
    save_key_file,
)
from authsvc.keys import hash_secret
from tests.authsvc.helpers import START, full_record_fields, new_key

REPO = Path(__file__).resolve().parents[2]
HASH = hash_secret("s", bytes(16))
ID = "3f2a9c0d1e2b4a5c"


def one_key(extra: str = "", *, key_id: str = ID, hashed: str = HASH) -> str:
    """A file with one key, plus `extra` lines (indented as fields of that key)."""
    body = f"keys:\n  - id: {key_id}\n    hash: {hashed}\n    user: alice\n"
    return body + textwrap.indent(textwrap.dedent(extra), "    ")


def test_the_documented_example_reads() -> None:
    text = one_key("""\
        team: ml
        models: ["gpt-4o*", "openai/**"]
        deny: ["gpt-4o"]
        limits: {requests_per_minute: 60, tokens_per_minute: 100000, concurrent_requests: 4,
                 budget: {usd: 50, period: month}}
        labels: {env: prod}
        created: 2026-11-23T10:00:00Z
        expires: 2027-01-01T00:00:00Z
        revoked: 2026-12-01T00:00:00Z
    """)
    (record,) = parse_key_file(text).keys
    assert record == KeyRecord(
        id=ID,
        hash=HASH,
        user="alice",
        team="ml",
        models=("gpt-4o*", "openai/**"),
        deny=("gpt-4o",),
        limits=Limits(60, 100000, 4, Budget(50.0, "month")),
        labels={"env": "prod"},
        created=datetime(2026, 11, 23, 10, tzinfo=UTC),
        expires=datetime(2027, 1, 1, tzinfo=UTC),
        revoked=datetime(2026, 12, 1, tzinfo=UTC),
    )


def test_optional_fields_default_to_no_restriction() -> None:
    (record,) = parse_key_file(one_key()).keys
    assert (record.team, record.models, record.deny, record.limits, dict(record.labels)) == ("", (), (), Limits(), {})
    assert (record.created, record.expires, record.revoked) == (None, None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2027-01-01T00:00:00Z", datetime(2027, 1, 1, tzinfo=UTC)),
        ("'2027-01-01T00:00:00Z'", datetime(2027, 1, 1, tzinfo=UTC)),  # quoted: a string
        ("2027-01-01T02:00:00+02:00", datetime(2027, 1, 1, tzinfo=UTC)),
        ("2027-01-01T00:00:00", datetime(2027, 1, 1, tzinfo=UTC)),  # no zone: UTC
        ("2027-01-01", datetime(2027, 1, 1, tzinfo=UTC)),  # a date: its midnight, UTC
    ],
)
def test_times_in_any_iso_form(value: str, expected: datetime) -> None:
    (record,) = parse_key_file(one_key(f"expires: {value}\n")).keys
    assert record.expires == expected


def test_an_empty_key_list_is_fine() -> None:
    assert parse_key_file("keys: []\n") == KeyFile()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a mapping with `keys: [...]`, got nothing"),  # a truncated file is not "no keys"
        ("- a\n", "expected a mapping with `keys: [...]`, got list"),
        ("keys:\n", "keys: required"),
        ("keys: {}\n", "keys: expected a list, got dict"),
        ("kyes: []\n", "kyes: unknown field"),
        ("keys: [\n", "not valid YAML"),
        ("keys: [1]\n", "keys[0]: expected a mapping, got int"),
        ("keys: [{hash: x, user: u}]\n", "keys[0].id: required"),
        (one_key(key_id="3F2A9C0D1E2B4A5C"), "keys[0].id: expected 16 lowercase hex characters"),
        (one_key(key_id="abc"), "keys[0].id: expected 16 lowercase hex characters"),
        (
            one_key(key_id="1234567890123456"),
            "got 1234567890123456 (an id of digits only must be quoted)",
        ),
        (one_key(hashed="sha256$00$00"), "keys[0].hash: expected sha256$<32 hex salt>$<64 hex digest>"),
        (one_key("model: ['*']\n"), "keys[0].model: unknown field"),
        (one_key("user2: x\n"), "keys[0].user2: unknown field"),
        (one_key("team: [a]\n"), "keys[0].team: expected a string, got list"),
        (one_key("models: gpt-4o\n"), "keys[0].models: expected a list of model globs, got str"),
        (one_key("models: ['gpt-4o', '']\n"), "keys[0].models[1]: must not be empty"),
        (one_key("deny: [null]\n"), "keys[0].deny[0]: expected a string, got nothing"),
        (one_key("limits: 5\n"), "keys[0].limits: expected a mapping, got int"),
        (
            one_key("limits: {requests_per_minute: -1}\n"),
            "keys[0].limits.requests_per_minute: expected a whole number ≥ 0",
        ),
        (
            one_key("limits: {tokens_per_minute: 1.5}\n"),
            "keys[0].limits.tokens_per_minute: expected a whole number ≥ 0",
        ),
        (one_key("limits: {concurrent_requests: true}\n"), "keys[0].limits.concurrent_requests: expected a whole"),
        (one_key("limits: {rpm: 5}\n"), "keys[0].limits.rpm: unknown field"),
        (
            one_key("limits: {budget: 50}\n"),
            "keys[0].limits.budget: expected a mapping such as {usd: 50",
        ),
        (one_key("limits: {budget: {usd: 0}}\n"), "keys[0].limits.budget.usd: expected US dollars (a number > 0)"),
        (one_key("limits: {budget: {usd: 5, period: year}}\n"), "keys[0].limits.budget.period: expected one of day,"),
        (one_key("labels: [a]\n"), "keys[0].labels: expected a mapping of strings, got list"),
        (
            one_key("labels: {tier: 1}\n"),
            "keys[0].labels.tier: expected a string (quote numbers and booleans)",
        ),
        (one_key("labels: {'': x}\n"), "keys[0].labels: a label name must be a non-empty string"),
        (one_key("user: ''\n").replace("    user: alice\n", "", 1), "keys[0].user: must not be empty"),
        (one_key('user: "a\\nb"\n').replace("    user: alice\n", "", 1), "keys[0].user: must not contain control"),
        (one_key("expires: soon\n"), "keys[0].expires: expected a time such as 2027-01-01T00:00:00Z, got 'soon'"),
        (one_key("created: 5\n"), "keys[0].created: expected a time such as 2027-01-01T00:00:00Z, got int"),
    ],
)
def test_bad_files_are_refused_with_the_path_of_the_field(text: str, message: str) -> None:
    with pytest.raises(KeyFileError) as info:
        parse_key_file(text)
    assert message in str(info.value)


def test_the_error_names_the_right_key() -> None:
    good = one_key().removeprefix("keys:\n")
    bad = good.replace(ID, "000000000000000c").replace("user: alice", "user: bob\n    limits: {requests_per_minute: x}")
    text = "keys:\n" + good.replace(ID, "000000000000000a") + good.replace(ID, "000000000000000b") + good + bad
    with pytest.raises(KeyFileError, match=r"^keys\[3\]\.limits\.requests_per_minute: expected a whole number ≥ 0"):
        parse_key_file(text)


def test_duplicate_ids_are_refused() -> None:
    text = one_key() + one_key().removeprefix("keys:\n")
    with pytest.raises(KeyFileError, match=r"keys\[1\]\.id: duplicate id 3f2a9c0d1e2b4a5c \(also keys\[0\]\)"):
        parse_key_file(text)


def test_a_pasted_secret_in_the_hash_field_is_not_echoed() -> None:
    with pytest.raises(KeyFileError) as info:
        parse_key_file(one_key(hashed="tgk_3f2a9c0d1e2b4a5c_topsecret"))
    assert "topsecret" not in str(info.value)


def test_dump_and_parse_round_trip() -> None:
    _, full = new_key("alice", **full_record_fields(), revoked=datetime(2026, 12, 1, 8, 30, 15, 250000, tzinfo=UTC))
    _, bare = new_key("bob", created=None)
    _, odd = new_key("*weird: user*", models=("**", "*"), labels={"n": "1", "empty": ""}, team="a: b")
    keys = KeyFile((full, bare, odd))
    assert parse_key_file(dump_key_file(keys)) == keys


def test_dump_writes_plain_times_and_readable_lists() -> None:
    _, record = new_key("alice", models=("gpt-4o*",), expires=datetime(2027, 1, 1, tzinfo=UTC))
    text = dump_key_file(KeyFile((record,)))
    assert "expires: 2027-01-01T00:00:00Z\n" in text
    assert "models: [gpt-4o*]\n" in text
    assert "comments are not preserved" in text.splitlines()[0]


# --- saving --------------------------------------------------------------------------------------------------------


def test_save_is_mode_0600_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys: []\n")
    path.chmod(0o644)
    _, record = new_key()
    save_key_file(path, KeyFile((record,)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys.yaml.lock").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.yaml", "keys.yaml.lock"]
    assert load_key_file(path) == KeyFile((record,))


def test_save_replaces_the_file_rather_than_rewriting_it(tmp_path: Path) -> None:
    # A reader that opened the old file keeps reading the old file whole: no reader ever sees half a file.
    path = tmp_path / "keys.yaml"
    save_key_file(path, KeyFile())
    with path.open() as old:
        save_key_file(path, KeyFile((new_key()[1],)))
        assert old.read() == dump_key_file(KeyFile())
        assert os.stat(path).st_ino != os.fstat(old.fileno()).st_ino


def test_save_through_a_symlink_replaces_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real.yaml"
    save_key_file(real, KeyFile())
    link = tmp_path / "link.yaml"
    link.symlink_to(real)
    save_key_file(link, KeyFile((new_key()[1],)))
    assert link.is_symlink()
    assert len(load_key_file(real).keys) == 1


def test_a_failed_change_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    save_key_file(path, KeyFile())
    before = path.read_bytes()

    def change(keys: KeyFile) -> KeyFile:
        raise LookupError("no such key")

    with pytest.raises(LookupError):
        modify_key_file(path, change)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.yaml", "keys.yaml.lock"]


def test_modify_creates_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    _, record = new_key()
    with pytest.raises(FileNotFoundError):
        modify_key_file(path, lambda keys: keys.with_key(record))
    assert modify_key_file(path, lambda keys: keys.with_key(record), create=True) == KeyFile((record,))
    assert load_key_file(path) == KeyFile((record,))


def test_modify_refuses_to_touch_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys: [oops]\n")
    with pytest.raises(KeyFileError, match=r"keys\[0\]"):
        modify_key_file(path, lambda keys: keys.with_key(new_key()[1]))
    assert path.read_text() == "keys: [oops]\n"


def test_with_key_refuses_a_duplicate_id() -> None:
    _, record = new_key()
    with pytest.raises(KeyFileError, match="duplicate id"):
        KeyFile((record,)).with_key(record)


def test_concurrent_adds_from_threads_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    records = [new_key(f"user{i}")[1] for i in range(40)]
    start = threading.Barrier(8)

    def add(mine: list[KeyRecord]) -> None:
        start.wait()
        for record in mine:
            modify_key_file(path, lambda keys, r=record: keys.with_key(r), create=True)  # type: ignore[misc]

    threads = [threading.Thread(target=add, args=(records[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {k.id for k in load_key_file(path).keys} == {r.id for r in records}


CHILD = """
import sys
from authsvc.keyfile import modify_key_file
from authsvc.keys import generate_key
from authsvc.keyfile import KeyRecord
for i in range(int(sys.argv[2])):
    key = generate_key()
    record = KeyRecord(id=key.id, hash=key.hash, user=f"{sys.argv[3]}-{i}")
    modify_key_file(sys.argv[1], lambda keys: keys.with_key(record), create=True)
"""


def test_concurrent_adds_from_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "generated")])}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(path), "25", name], env=env) for name in ("a", "b", "c")
    ]
    assert [child.wait(timeout=60) for child in children] == [0, 0, 0]
    users = sorted(k.user for k in load_key_file(path).keys)
    assert users == sorted(f"{name}-{i}" for name in "abc" for i in range(25))


def test_records_compare_by_value_and_start_without_labels() -> None:
    assert KeyRecord(id=ID, hash=HASH, user="u", created=START) == KeyRecord(id=ID, hash=HASH, user="u", created=START)
    assert dict(KeyRecord(id=ID, hash=HASH, user="u").labels) == {}


def test_a_yaml_error_is_one_line_and_quotes_nothing_from_the_file() -> None:
    with pytest.raises(KeyFileError) as info:
        parse_key_file("keys:\n  - id: x\n   user: tgk_3f2a9c0d1e2b4a5c_topsecret\n")
    message = str(info.value)
    assert message.startswith("not valid YAML at line 3, column ")
    assert "\n" not in message
    assert "topsecret" not in message
