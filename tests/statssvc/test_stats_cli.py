"""`tollgate stats usage` against a running stats server, and `tollgate statssvc` run for real as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gateway.cli import main
from statssvc.server import StatsServer, start_stats_server
from tests.statssvc.usage_helpers import HOUR, record
from tollgate.stats.v1 import stats_pb2 as pb
from tollgate.stats.v1 import stats_pb2_grpc as pb_grpc

LISTENING = re.compile(r"stats listening on 127\.0\.0\.1:(\d+)")
NUMBERS = ["REQUESTS", "ERRORS", "INPUT", "OUTPUT", "CACHED", "REASONING", "COST_USD"]
BASE = (time.time() // HOUR - 3) * HOUR  # three whole hours ago, so hour buckets start on it


@pytest.fixture
async def live_server(tmp_path: Path) -> AsyncIterator[StatsServer]:
    """A stats server on the real clock, holding three records of the last three hours."""
    server = await start_stats_server(tmp_path / "usage.db", "127.0.0.1:0")
    records = [
        record("a", at=BASE + 600, user="alice", requested_model="gpt-4o", cost_usd=1.5, input_tokens=1000),
        record("b", at=BASE + 4200, user="alice", cost_usd=0.000123, output_tokens=7, outcome=pb.OUTCOME_FAILED),
        record("c", at=BASE + 1200, user="", cost_usd=0.01, cached_tokens=5, reasoning_tokens=2),
    ]
    await server.store.insert(records)
    yield server
    await server.stop(0)


async def usage(server: StatsServer | int, *flags: str) -> int:
    """`tollgate stats usage --server ... FLAGS`, on a thread: the server answers on this test's event loop."""
    port = server if isinstance(server, int) else server.port
    return await asyncio.to_thread(main, ["stats", "usage", "--server", f"127.0.0.1:{port}", *flags])


async def test_a_table_by_model_and_user(live_server: StatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert await usage(live_server, "--by", "model,user", "--since", "24h") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [
        ["MODEL", "USER", *NUMBERS],
        ["gpt-4o", "alice", "1", "0", "1000", "0", "0", "0", "1.500000"],
        ["gpt-4o-mini", "(none)", "1", "0", "0", "0", "5", "2", "0.010000"],
        ["gpt-4o-mini", "alice", "1", "1", "0", "7", "0", "0", "0.000123"],
        ["TOTAL", "3", "1", "1000", "7", "5", "2", "1.510123"],
    ]
    assert len({len(line) for line in lines}) == 1  # aligned: the numbers end in one column


async def test_a_table_of_the_total_alone(live_server: StatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert await usage(live_server, "--user", "alice") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [NUMBERS, ["TOTAL", "2", "1", "1000", "7", "0", "0", "1.500123"]]


async def test_a_bucketed_table(live_server: StatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert await usage(live_server, "--by", "user", "--bucket", "1h", "--since", "2d") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    hour = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE + h * HOUR)) for h in range(2)]
    assert rows[0] == ["USER", "TIME", *NUMBERS]
    assert [r[:3] for r in rows[1:-1]] == [["alice", hour[0], "1"], ["alice", hour[1], "1"], ["(none)", hour[0], "1"]]
    assert rows[-1][:2] == ["TOTAL", "3"]


async def test_json(live_server: StatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert await usage(live_server, "--by", "user", "--model", "gpt-4o-mini", "--json", "--bucket", "1h") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["group_by"] == ["user"]
    assert document["totals"]["requests"] == 2
    assert [g["keys"] for g in document["groups"]] == [{"user": ""}, {"user": "alice"}]
    alice = document["groups"][1]
    assert alice["totals"] == {
        "requests": 1,
        "errors": 1,
        "input_tokens": 0,
        "output_tokens": 7,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": 0.000123,
    }
    assert [b["start_time"] for b in alice["buckets"]] == [
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE + HOUR))
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    assert await usage(port) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"tollgate stats usage: cannot reach the stats server at 127.0.0.1:{port}\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--by", "model,colour"],
            "--by: unknown dimension 'colour' (choose from key, user, team, model, backend, experiment, arm)",
        ),
        (["--by", "user,user"], "--by: a dimension is named twice"),
        (["--since", "yesterday"], "--since: expected a duration before now (30m, 24h, 7d) or a time"),
        (["--until", "2026-13-01"], "--until: expected a duration"),
        (["--since", "1h", "--until", "2h"], "--until: must not be before --since"),
        (["--bucket", "soon"], "--bucket: expected a duration"),
        (["--bucket", "500ms"], "--bucket: must be at least 1s"),
    ],
)
def test_a_bad_flag_exits_2(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "usage", "--server", "127.0.0.1:1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tollgate stats usage: {message}") and err.count("\n") == 1


def test_an_unknown_flag_is_argparse_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["stats", "usage", "--colour", "blue"])
    assert caught.value.code == 2
    assert "unrecognized arguments: --colour" in capsys.readouterr().err


async def test_a_query_the_server_refuses_exits_2(live_server: StatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert await usage(live_server, "--bucket", "1s", "--since", "7d") == 2
    err = capsys.readouterr().err
    assert err.startswith("tollgate stats usage: the server refused the query: bucket: 1s over this window makes")


# `tollgate statssvc`, as a process


@contextlib.asynccontextmanager
async def statssvc(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m gateway statssvc ARGS`, stderr piped; killed if still running when the block exits."""
    env = {k: v for k, v in os.environ.items() if k != "TOLLGATE_LOG_LEVEL"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "statssvc",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _announced_port(process: asyncio.subprocess.Process) -> int:
    assert process.stderr is not None
    seen = []
    async with asyncio.timeout(15):
        while line := (await process.stderr.readline()).decode():
            seen.append(line)
            if match := LISTENING.search(line):
                return int(match.group(1))
    raise AssertionError(f"statssvc exited before listening:\n{''.join(seen)}")


async def test_statssvc_serves_until_sigterm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "new-dir" / "usage.db"
    async with statssvc("--db", str(db), "--listen", "127.0.0.1:0") as process:
        port = await _announced_port(process)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.StatsServiceStub(channel)
            answer = await stub.Report(pb.ReportRequest(records=[record("x", at=BASE, cost_usd=0.5)]), timeout=5)
        assert answer.accepted == 1
        assert await usage(port, "--json") == 0
        assert json.loads(capsys.readouterr().out)["totals"]["requests"] == 1
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    # Closed cleanly: the WAL is checkpointed into the file and removed.
    assert await asyncio.to_thread(lambda: (db.exists(), Path(f"{db}-wal").exists())) == (True, False)


async def test_statssvc_on_a_busy_port_exits_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with statssvc("--db", str(tmp_path / "usage.db"), "--listen", f"127.0.0.1:{port}") as process:
            assert process.stderr is not None
            err = (await asyncio.wait_for(process.stderr.read(), 15)).decode()
            assert await asyncio.wait_for(process.wait(), 15) == 1
    (line,) = [line for line in err.splitlines() if line.startswith("tollgate statssvc: ")]
    assert f"127.0.0.1:{port}" in line
    assert "Traceback" not in err


def _has_open(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):  # a descriptor closed while we look
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the database opened")
def test_a_sigterm_while_statssvc_starts_stops_it_cleanly_once_it_is_up(tmp_path: Path) -> None:
    # The test holds the database's exclusive lock: statssvc, having opened the file, waits on it in its start (its
    # event loop running, not yet listening). A SIGTERM there must not end it with the default action (exit -15).
    env = {k: v for k, v in os.environ.items() if k != "TOLLGATE_LOG_LEVEL"}
    for attempt in range(3):
        db = tmp_path / f"usage-{attempt}.db"
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        args = ["statssvc", "--db", str(db), "--listen", "127.0.0.1:0"]
        process = subprocess.Popen([sys.executable, "-m", "gateway", *args], env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not _has_open(process.pid, db):
                assert process.poll() is None, f"statssvc exited before opening its database: {process.communicate()}"
                assert time.monotonic() < deadline, "statssvc never opened its database"
                time.sleep(0.005)
            process.send_signal(signal.SIGTERM)
            lock.execute("ROLLBACK")
            lock.close()
            _, err = process.communicate(timeout=30)
        finally:
            lock.close()
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, err
        assert LISTENING.search(err), err
        assert "shutting down (SIGTERM)" in err
