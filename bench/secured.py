"""The `secured` target's own parts: a real auth server, a real stats server, and the check that no record was lost.

The key is made as a user would make it (`tollgate keys add`, the key read from the first line of stdout), served by
`tollgate authsvc`; usage records go to `tollgate statssvc` on a SQLite file in the bench's log directory. Between
runs the bench waits until that file holds a record for every request sent so far, so each run's CPU figures include
its own batched inserts; the wait reads the file directly (statssvc allows readers beside its writer) so the polling
costs the stats server nothing. At the end, `tollgate stats usage --json` must count exactly the requests sent.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.figures import UsageCheck
from bench.procs import Service, start_service

__all__ = ["Accounting", "SideServers", "secured_config", "start_side_servers"]

_USER = "bench"
_HOST = "127.0.0.1"
_AUTH_READY = r"auth listening on 127\.0\.0\.1:(\d+)"
_STATS_READY = r"stats listening on 127\.0\.0\.1:(\d+)"
_PRICE = {"input": 0.15, "output": 0.60, "cached_input": 0.075}  # gpt-4o-mini's list price, US$ per million tokens
_POLL_INTERVAL = 0.05
_CLI_TIMEOUT = 30.0


@dataclass
class Accounting:
    """Counts the requests sent to the secured gateway and waits for the stats server to have stored them all."""

    db_path: Path
    server: str  # the stats server's host:port
    cwd: Path
    sent: int = 0

    def stored(self) -> int:
        """Records in the stats server's database now (a read-only count: no work for the server)."""
        try:
            with closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5.0)) as db:
                row = db.execute("SELECT count(*) FROM usage").fetchone()
        except sqlite3.Error as exc:
            raise RuntimeError(f"cannot count the usage records in {self.db_path}: {exc}") from exc
        return int(row[0])

    async def settle(self, within: float) -> bool:
        """Wait until every request sent so far has its record stored; False if `within` seconds passed first."""
        deadline = time.monotonic() + within
        while self.stored() < self.sent:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(_POLL_INTERVAL)
        return True

    async def check(self, within: float) -> UsageCheck:
        """Wait (`within` seconds at most) for the records, then ask the server as a user would (`stats usage`)."""
        await self.settle(within)
        argv = [sys.executable, "-m", "gateway", "stats", "usage", "--server", self.server, "--json"]
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), _CLI_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return UsageCheck(self.sent, None, f"`tollgate stats usage` did not answer within {_CLI_TIMEOUT:.0f}s")
        if proc.returncode != 0:
            return UsageCheck(self.sent, None, f"`tollgate stats usage` exited {proc.returncode}: {err.decode()[:300]}")
        try:
            totals = orjson.loads(out)["totals"]
            stored, cost = int(totals["requests"]), float(totals["cost_usd"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return UsageCheck(self.sent, None, f"unexpected `tollgate stats usage --json` output: {out[:300]!r}")
        return UsageCheck(self.sent, stored, cost_usd=cost)


@dataclass
class SideServers:
    """authsvc and statssvc, started; `wait` gives their ports once both listen."""

    auth: Service
    stats: Service
    api_key: str
    db_path: Path

    def wait(self) -> tuple[int, int]:
        return int(self.auth.wait_for(_AUTH_READY)[1]), int(self.stats.wait_for(_STATS_READY)[1])


def _make_key(keys: Path, cwd: Path) -> str:
    argv = [sys.executable, "-m", "gateway", "keys", "add", "--file", str(keys), "--user", _USER, "--models", "**"]
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=_CLI_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"`tollgate keys add` did not finish within {_CLI_TIMEOUT:.0f}s") from exc
    lines = done.stdout.splitlines()
    if done.returncode != 0 or not lines or not lines[0].strip():
        raise RuntimeError(f"`tollgate keys add` failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return lines[0].strip()


def start_side_servers(log_dir: Path, cwd: Path, services: list[Service]) -> SideServers:
    """Make the bench's key, start authsvc on it and statssvc on a fresh database; both are appended to `services`."""
    keys = log_dir / "keys.yaml"
    api_key = _make_key(keys, cwd)
    listen = ("--listen", f"{_HOST}:0")
    auth_argv = [sys.executable, "-m", "gateway", "authsvc", "--keys", str(keys), *listen]
    auth = start_service("authsvc", auth_argv, log_dir, cwd)
    services.append(auth)
    db_path = log_dir / "usage.db"
    stats = start_service(
        "statssvc", [sys.executable, "-m", "gateway", "statssvc", "--db", str(db_path), *listen], log_dir, cwd
    )
    services.append(stats)
    return SideServers(auth, stats, api_key, db_path)


def secured_config(base: dict[str, Any], auth_port: int, stats_port: int, spool_dir: Path) -> dict[str, Any]:
    """The `tollgate` target's configuration with the auth and stats servers, and a price for every model."""
    return {
        **base,
        "auth": {"server": f"{_HOST}:{auth_port}"},
        "stats": {"server": f"{_HOST}:{stats_port}", "spool_dir": str(spool_dir)},
        "prices": {model["name"]: _PRICE for model in base["models"]},
    }
