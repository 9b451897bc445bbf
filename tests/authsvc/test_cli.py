"""`tollgate keys add|list|revoke` through `gateway.cli.main`, and `tollgate authsvc` run for real."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from authsvc.keyfile import load_key_file, save_key_file
from authsvc.keys import parse_key
from authsvc.servicer import REVOKED_KEY
from gateway.cli import main
from tests.authsvc.helpers import TIMEOUT, Keys, check, denial, new_key
from tollgate.auth.v1 import auth_pb2_grpc as pb_grpc

LISTENING = re.compile(r"auth listening on 127\.0\.0\.1:(\d+)")
REPO = Path(__file__).resolve().parents[2]


def add(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> str:
    """`tollgate keys add`; returns the raw key it printed."""
    assert main(["keys", "add", "--file", str(path), *extra]) == 0
    out = capsys.readouterr()
    assert re.fullmatch(r"tgk_[0-9a-f]{16}_\S+\n", out.out), "stdout is the key alone"
    raw = out.out.strip()
    key_id = raw.split("_")[1]
    assert f"key id {key_id}" in out.err
    assert "store it now, it is not shown again" in out.err
    return raw


def test_add_makes_the_file_and_prints_the_key_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.yaml"
    with caplog.at_level(logging.DEBUG):
        raw = add(capsys, path, "--user", "alice", "--team", "ml")
    key_id, secret = parse_key(raw) or ("", "")
    assert secret
    text = path.read_text()
    assert secret not in text
    assert raw not in caplog.text
    assert secret not in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (record,) = load_key_file(path).keys
    assert (record.id, record.user, record.team) == (key_id, "alice", "ml")
    assert record.created is not None
    assert record.created <= datetime.now(UTC)


def test_add_with_every_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.yaml"
    add(capsys, path, "--user", "bob")
    before = datetime.now(UTC)
    # fmt: off
    add(capsys, path, "--user", "alice", "--team", "ml", "--models", "gpt-4o*", "openai/**", "--models", "claude-*",
        "--deny", "gpt-4o", "--expires", "30d", "--rpm", "60", "--tpm", "100000", "--concurrency", "4",
        "--budget", "50", "--budget-period", "week", "--label", "env=prod", "--label", "note=a=b")
    # fmt: on
    bob, alice = load_key_file(path).keys
    assert bob.user == "bob"
    assert alice.models == ("gpt-4o*", "openai/**", "claude-*")
    assert alice.deny == ("gpt-4o",)
    limits = alice.limits
    assert (limits.requests_per_minute, limits.tokens_per_minute, limits.concurrent_requests) == (60, 100000, 4)
    assert limits.budget is not None
    assert (limits.budget.usd, limits.budget.period) == (50.0, "week")
    assert dict(alice.labels) == {"env": "prod", "note": "a=b"}
    assert alice.expires is not None
    assert before + timedelta(days=30) - timedelta(seconds=2) <= alice.expires <= before + timedelta(days=30, seconds=2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2w", timedelta(weeks=2)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
    ],
)
def test_add_expires_after_a_lifetime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, expected: timedelta
) -> None:
    add(capsys, tmp_path / "keys.yaml", "--user", "u", "--expires", value)
    (record,) = load_key_file(tmp_path / "keys.yaml").keys
    assert record.expires is not None
    assert record.created is not None
    assert record.expires - record.created == expected


def test_add_expires_at_a_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add(capsys, tmp_path / "keys.yaml", "--user", "u", "--expires", "2999-01-01T00:00:00Z", "--budget", "5")
    (record,) = load_key_file(tmp_path / "keys.yaml").keys
    assert record.expires == datetime(2999, 1, 1, tzinfo=UTC)
    assert record.limits.budget is not None
    assert record.limits.budget.period == "month"  # the default period


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires", "soon"], "--expires: expected a lifetime such as 90m, 12h, 30d or 2w"),
        (["--expires", "2001-01-01T00:00:00Z"], "--expires: 2001-01-01T00:00:00Z is not in the future"),
        (["--expires", "0d"], "is not in the future"),
        (["--expires", "999999w"], "--expires: expected a lifetime"),
        (["--budget-period", "day"], "--budget-period needs --budget"),
        (["--label", "a=1", "--label", "a=2"], "--label: a given twice"),
    ],
)
def test_add_refuses_bad_input_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    path = tmp_path / "keys.yaml"
    assert main(["keys", "add", "--file", str(path), "--user", "u", *args]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert message in out.err
    assert "Traceback" not in out.err
    assert not path.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", ""], "argument --user: expected a non-empty string"),
        (["--user", "u", "--rpm", "-1"], "argument --rpm: expected a whole number ≥ 0, got '-1'"),
        (["--user", "u", "--tpm", "lots"], "argument --tpm: expected a whole number ≥ 0"),
        (["--user", "u", "--budget", "0"], "argument --budget: expected US dollars (a number > 0)"),
        (["--user", "u", "--budget", "nan"], "argument --budget: expected US dollars"),
        (["--user", "u", "--budget", "5", "--budget-period", "year"], "argument --budget-period: invalid choice"),
        (["--user", "u", "--label", "novalue"], "argument --label: expected name=value"),
        (["--user", "u", "--models", ""], "argument --models: expected a non-empty string"),
        ([], "the following arguments are required: --user"),
    ],
)
def test_add_refuses_bad_flags_like_argparse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["keys", "add", "--file", str(tmp_path / "keys.yaml"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_add_refuses_a_bad_file_and_leaves_it_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys: [{id: x}]\n")
    assert main(["keys", "add", "--file", str(path), "--user", "u"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert f"tollgate keys add: {path}: keys[0]" in out.err
    assert path.read_text() == "keys: [{id: x}]\n"


def test_add_into_a_missing_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "add", "--file", str(tmp_path / "no" / "keys.yaml"), "--user", "u"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert "No such file or directory" in out.err


def test_list_shows_status_and_never_hashes(keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "list", "--file", str(keys.path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "USER", "TEAM", "MODELS", "STATUS", "EXPIRES"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    alice, bob = keys.records["alice"], keys.records["bob"]
    assert rows["alice"] == [alice.id, "alice", "ml", "gpt-4o*,openai/**,!gpt-4o", "active", "2027-01-01T00:00:00Z"]
    assert rows["bob"] == [bob.id, "bob", "-", "(all)", "active", "never"]
    assert rows["carol"][4] == "expired"
    assert rows["dave"][4] == "revoked"
    assert "sha256$" not in out
    for record in keys.records.values():
        assert record.hash.split("$")[2] not in out


def test_list_an_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keys.yaml").write_text("keys: []\n")
    assert main(["keys", "list", "--file", str(tmp_path / "keys.yaml")]) == 0
    assert "no keys in" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["list", "revoke"])
def test_a_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    extra = ["0123456789abcdef"] if command == "revoke" else []
    assert main(["keys", command, "--file", str(tmp_path / "nope.yaml"), *extra]) == 2
    assert f"tollgate keys {command}: {tmp_path / 'nope.yaml'}: no such key file" in capsys.readouterr().err
    assert not (tmp_path / "nope.yaml").exists()


def test_revoke_sets_the_time_once(keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    alice = keys.records["alice"]
    before = datetime.now(UTC).replace(microsecond=0)
    assert main(["keys", "revoke", "--file", str(keys.path), alice.id]) == 0
    assert f"revoked key {alice.id} (alice)" in capsys.readouterr().out
    revoked = load_key_file(keys.path).get(alice.id)
    assert revoked is not None
    assert revoked.revoked is not None
    assert before <= revoked.revoked <= datetime.now(UTC)
    assert revoked == dataclasses.replace(alice, revoked=revoked.revoked)  # nothing else changed
    assert main(["keys", "revoke", "--file", str(keys.path), alice.id]) == 0
    assert "already revoked" in capsys.readouterr().out
    again = load_key_file(keys.path).get(alice.id)
    assert again is not None
    assert again.revoked == revoked.revoked


def test_revoke_an_unknown_id_is_exit_1(keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    before = keys.path.read_bytes()
    assert main(["keys", "revoke", "--file", str(keys.path), "0123456789abcdef"]) == 1
    assert f"no key 0123456789abcdef in {keys.path}" in capsys.readouterr().err
    assert keys.path.read_bytes() == before


def test_revoke_refuses_a_whole_key_without_echoing_it(keys: Keys, capsys: pytest.CaptureFixture[str]) -> None:
    raw = keys.raw["alice"]
    assert main(["keys", "revoke", "--file", str(keys.path), raw]) == 2
    out = capsys.readouterr()
    assert "that is a whole key: pass only its id" in out.err
    assert raw not in out.err + out.out
    assert main(["keys", "revoke", "--file", str(keys.path), "alice"]) == 2
    assert "expected a key id" in capsys.readouterr().err


def test_keys_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["keys"])
    assert info.value.code == 2
    assert "{add,list,revoke}" in capsys.readouterr().err


# --- `tollgate authsvc`, a real process --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cache-ttl", "soon"], "--cache-ttl: expected a duration"),
        (["--reload-interval", "0"], "--reload-interval: must be more than zero"),
        (["--listen", "nowhere"], "--listen: expected host:port"),
    ],
)
def test_authsvc_refuses_bad_flags(
    keys: Keys, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["authsvc", "--keys", str(keys.path), *args]) == 2
    assert message in capsys.readouterr().err


def test_authsvc_refuses_a_missing_or_bad_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["authsvc", "--keys", str(tmp_path / "nope.yaml"), "--listen", "127.0.0.1:0"]) == 2
    assert "nope.yaml: no such key file" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("keys: [1]\n")
    assert main(["authsvc", "--keys", str(tmp_path / "bad.yaml"), "--listen", "127.0.0.1:0"]) == 2
    assert "bad.yaml: keys[0]: expected a mapping, got int" in capsys.readouterr().err


async def test_authsvc_serves_reloads_on_sighup_and_stops_on_sigterm(keys: Keys) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TOLLGATE_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "generated")])
    # A reload interval of an hour: only SIGHUP can make this server see a change.
    args = ["authsvc", "--keys", str(keys.path), "--listen", "127.0.0.1:0", "--reload-interval", "1h"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    log: list[str] = []

    async def read_until(pattern: re.Pattern[str]) -> re.Match[str]:
        async with asyncio.timeout(15):
            while True:
                line = (await process.stderr.readline()).decode()  # type: ignore[union-attr]
                assert line, "authsvc exited:\n" + "".join(log)
                log.append(line)
                if match := pattern.search(line):
                    return match

    try:
        port = int((await read_until(LISTENING)).group(1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AuthServiceStub(channel)
            assert (await check(stub, keys.raw["alice"])).user == "alice"
            raw, erin = new_key("erin")
            revoked = dataclasses.replace(keys.records["alice"], revoked=datetime.now(UTC))
            save_key_file(keys.path, keys.file().with_key(erin).replace(revoked))
            process.send_signal(signal.SIGHUP)
            await read_until(re.compile(r"reloaded: 5 keys"))
            assert (await check(stub, raw)).user == "erin"
            assert await denial(stub, keys.raw["alice"]) == (grpc.StatusCode.UNAUTHENTICATED, REVOKED_KEY)
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT * 3):
            rest = (await process.stderr.read()).decode()
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = "".join(log) + rest
    assert "shutting down" in output
    for secret in (keys.raw["alice"], raw):
        assert secret.split("_", 2)[2] not in output


def _writer_once_read(fifo: Path, process: subprocess.Popen[str]) -> int:
    """Open `fifo` for writing once `process` has opened it for reading (it is starting: loading its keys)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until a reader has it open
        except OSError:
            assert process.poll() is None, f"authsvc exited before loading its keys: {process.communicate()[1]}"
            assert time.monotonic() < deadline, "authsvc never opened its key file"
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd


def test_a_sigterm_while_authsvc_starts_stops_it_cleanly_once_it_is_up(keys: Keys, tmp_path: Path) -> None:
    # The key file is a FIFO: authsvc stays in its start (its event loop running, not yet listening) until the test
    # writes it. A SIGTERM there must not end it with the default action (exit -15), every time.
    env = {k: v for k, v in os.environ.items() if k != "TOLLGATE_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "generated")])
    text = keys.path.read_text()
    for attempt in range(3):
        fifo = tmp_path / f"keys-{attempt}.yaml"
        os.mkfifo(fifo, 0o600)
        args = ["authsvc", "--keys", str(fifo), "--listen", "127.0.0.1:0", "--reload-interval", "1h"]
        process = subprocess.Popen([sys.executable, "-m", "gateway", *args], env=env, stderr=subprocess.PIPE, text=True)
        try:
            writer = _writer_once_read(fifo, process)
            process.send_signal(signal.SIGTERM)
            with os.fdopen(writer, "w") as f:
                f.write(text)
            _, err = process.communicate(timeout=TIMEOUT * 6)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, err
        assert LISTENING.search(err), err
        assert "shutting down (SIGTERM)" in err
