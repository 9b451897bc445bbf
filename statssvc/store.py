"""`UsageStore`: usage records in one SQLite file (WAL), idempotent on request_id, summed on demand.

SQLite calls block, so the one connection lives on one dedicated worker thread and every call reaches it through
`run_in_executor`: the event loop never waits on the disk, and the calls are serialized without a lock.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TypeVar

from statssvc.aggregate import UsageQuery, run_query
from statssvc.schema import INSERT_SQL, migrate, record_from_row, row_from_record
from tollgate.stats.v1 import stats_pb2 as pb

T = TypeVar("T")
Clock = Callable[[], float]  # seconds since the Unix epoch, like time.time
log = logging.getLogger("tollgate.stats")

BUSY_TIMEOUT_MS = 5000  # another process (a backup, an operator's sqlite3 shell) holding the write lock


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


class UsageStore:
    """The usage table of one SQLite file; open with `await UsageStore.open(path)`, end with `await close()`."""

    def __init__(self, path: str | Path, *, clock: Clock = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-store")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, *, clock: Clock = time.time) -> UsageStore:
        """Open (creating or migrating) the database at `path`; its directory must exist."""
        store = cls(path, clock=clock)
        try:
            await store._call(store._connect)
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        return store

    async def insert(self, records: Sequence[pb.UsageRecord]) -> tuple[int, int]:
        """Store `records` in one transaction; return (accepted, duplicates): a known request_id is skipped."""
        if not records:
            return 0, 0
        return await self._call(self._insert, records)

    async def query(self, request: pb.QueryUsageRequest) -> pb.QueryUsageResponse:
        """Sum the records `request` selects (see QueryUsageRequest); unset end_time is the clock's now."""
        query = UsageQuery.from_request(request, _us(self._clock()))
        return await self._call(self._query, query)

    async def earliest(self) -> int | None:
        """The oldest start_time stored, in Unix microseconds; None when the store is empty."""
        return await self._call(self._earliest)

    async def get(self, request_id: str) -> pb.UsageRecord | None:
        """The stored record with this request_id, if any."""
        return await self._call(self._get, request_id)

    async def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL into the file) and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._call(self._disconnect, closing=True)
        finally:
            self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: object, closing: bool = False) -> T:
        if self._closed and not closing:
            raise RuntimeError("the usage store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    # Everything below runs on the worker thread.

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the usage store is not open")
        return self._conn

    def _connect(self) -> None:
        # Autocommit mode: each write below opens and ends its own explicit transaction.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL loses no data on a process crash, only the last commits on a power loss; much faster.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            found = migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        log.debug("usage store %s open (schema found at version %d)", self.path, found)

    def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute("PRAGMA optimize")  # what SQLite recommends before closing a long-lived connection
            finally:
                conn.close()

    def _insert(self, records: Sequence[pb.UsageRecord]) -> tuple[int, int]:
        conn = self._db()
        received_at = _us(self._clock())
        rows = [row_from_record(r, received_at) for r in records]
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(INSERT_SQL, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # some errors (a full disk) have rolled back already
                conn.execute("ROLLBACK")
            raise
        accepted = conn.total_changes - before  # rows skipped by ON CONFLICT DO NOTHING change nothing
        return accepted, len(rows) - accepted

    def _query(self, query: UsageQuery) -> pb.QueryUsageResponse:
        return run_query(self._db(), query)

    def _earliest(self) -> int | None:
        value = self._db().execute("SELECT MIN(start_time) FROM usage").fetchone()[0]
        return None if value is None else int(value)

    def _get(self, request_id: str) -> pb.UsageRecord | None:
        cursor = self._db().cursor()
        cursor.row_factory = sqlite3.Row
        row = cursor.execute("SELECT * FROM usage WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else record_from_row(row)
