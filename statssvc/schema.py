"""The `usage` table: its schema, its migrations, and how one `UsageRecord` becomes one row.

Times are integer Unix microseconds (start_time, received_at) and durations are float milliseconds, so plain SQL
(`sqlite3 tollgate-usage.db`) can read the table; `outcome` is the enum's name, e.g. `OUTCOME_FAILED`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from tollgate.stats.v1 import stats_pb2 as pb

# The columns of `usage`, in insert order; every name that reaches SQL text comes from here or from `GROUP_COLUMNS`.
COLUMNS = (
    "request_id",
    "start_time",
    "key_id",
    "user",
    "team",
    "operation",
    "requested_model",
    "backend",
    "provider",
    "provider_model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "usage_estimated",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "http_status",
    "grpc_status",
    "error_type",
    "stream",
    "cache_hit",
    "attempts",
    "route",
    "outcome",
    "labels",
    "received_at",
    "experiment",
    "experiment_arm",
    "config_hash",
    "resumed",
)

_TEXT_COLUMNS = (
    "key_id",
    "user",
    "team",
    "operation",
    "requested_model",
    "backend",
    "provider",
    "provider_model",
    "experiment",
    "experiment_arm",
    "config_hash",
)
_TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
FAILED = pb.Outcome.Name(pb.OUTCOME_FAILED)

# Migration N (0-based) takes the schema from user_version N to N + 1; append, never edit, once released.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE usage (
        request_id       TEXT PRIMARY KEY,
        start_time       INTEGER NOT NULL,  -- Unix microseconds
        key_id           TEXT NOT NULL,
        "user"           TEXT NOT NULL,
        team             TEXT NOT NULL,
        operation        TEXT NOT NULL,
        requested_model  TEXT NOT NULL,
        backend          TEXT NOT NULL,
        provider         TEXT NOT NULL,
        provider_model   TEXT NOT NULL,
        input_tokens     INTEGER NOT NULL,
        output_tokens    INTEGER NOT NULL,
        cached_tokens    INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        usage_estimated  INTEGER NOT NULL,  -- 0 or 1
        cost_usd         REAL NOT NULL,
        latency_ms       REAL NOT NULL,
        ttft_ms          REAL,              -- NULL when nothing was streamed
        http_status      INTEGER NOT NULL,
        grpc_status      INTEGER NOT NULL,
        error_type       TEXT NOT NULL,
        stream           INTEGER NOT NULL,
        cache_hit        INTEGER NOT NULL,
        attempts         INTEGER NOT NULL,
        route            TEXT NOT NULL,
        outcome          TEXT NOT NULL,     -- the Outcome name; the number, as text, for a value newer than this code
        labels           TEXT NOT NULL,     -- a JSON object
        received_at      INTEGER NOT NULL   -- Unix microseconds, when this server stored the row
    );
    CREATE INDEX usage_start_time ON usage (start_time);
    CREATE INDEX usage_key_id ON usage (key_id);
    CREATE INDEX usage_user ON usage ("user");
    CREATE INDEX usage_team ON usage (team);
    CREATE INDEX usage_requested_model ON usage (requested_model);
    """,
    """
    ALTER TABLE usage ADD COLUMN experiment TEXT NOT NULL DEFAULT '';
    ALTER TABLE usage ADD COLUMN experiment_arm TEXT NOT NULL DEFAULT '';
    """,
    """
    ALTER TABLE usage ADD COLUMN config_hash TEXT NOT NULL DEFAULT '';
    """,
    """
    ALTER TABLE usage ADD COLUMN resumed INTEGER NOT NULL DEFAULT 0;  -- streams continued by another target
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_QUOTED = ", ".join(f'"{c}"' for c in COLUMNS)
# A request_id already stored (by an earlier batch, or earlier in this one) is skipped and counted as a duplicate.
INSERT_SQL = (
    f"INSERT INTO usage ({_QUOTED}) VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT (request_id) DO NOTHING"
)


class SchemaError(RuntimeError):
    """The database was written by a newer statssvc whose schema this one does not know."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to `SCHEMA_VERSION` in one transaction; return the version found before."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise SchemaError(f"the database has schema version {found}; this statssvc knows up to {SCHEMA_VERSION}")
    if found == SCHEMA_VERSION:
        return found
    # executescript commits first, so the whole upgrade (DDL included) is one explicit transaction.
    steps = "".join(MIGRATIONS[found:])
    try:
        conn.executescript(f"BEGIN IMMEDIATE;{steps};PRAGMA user_version = {SCHEMA_VERSION};COMMIT;")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


def _ms(duration: Any) -> float:
    return float(duration.seconds * 1000 + duration.nanos / 1e6)


def _outcome(value: pb.Outcome.ValueType) -> str:
    try:
        return pb.Outcome.Name(value)
    except ValueError:  # an enum value added after this build: kept, as its number
        return str(value)


def row_from_record(r: pb.UsageRecord, received_at_us: int) -> tuple[object, ...]:
    """The `usage` row of one record, in `COLUMNS` order."""
    return (
        r.request_id,
        r.start_time.ToMicroseconds(),
        r.key_id,
        r.user,
        r.team,
        r.operation,
        r.requested_model,
        r.backend,
        r.provider,
        r.provider_model,
        r.input_tokens,
        r.output_tokens,
        r.cached_tokens,
        r.reasoning_tokens,
        int(r.usage_estimated),
        r.cost_usd,
        _ms(r.latency),
        _ms(r.time_to_first_token) if r.HasField("time_to_first_token") else None,
        r.http_status,
        r.grpc_status,
        r.error_type,
        int(r.stream),
        int(r.cache_hit),
        r.attempts,
        r.route,
        _outcome(r.outcome),
        orjson.dumps(dict(sorted(r.labels.items()))).decode(),
        received_at_us,
        r.experiment,
        r.experiment_arm,
        r.config_hash,
        r.resumed,
    )


def record_from_row(row: sqlite3.Row) -> pb.UsageRecord:
    """The record a stored row came from (for tests, exports and tools; queries never need it)."""
    outcome = row["outcome"]
    record = pb.UsageRecord(
        request_id=row["request_id"],
        **{c: row[c] for c in _TEXT_COLUMNS + _TOKEN_COLUMNS},
        usage_estimated=bool(row["usage_estimated"]),
        cost_usd=row["cost_usd"],
        http_status=row["http_status"],
        grpc_status=row["grpc_status"],
        error_type=row["error_type"],
        stream=bool(row["stream"]),
        cache_hit=bool(row["cache_hit"]),
        attempts=row["attempts"],
        resumed=row["resumed"],
        route=row["route"],
        outcome=pb.Outcome.ValueType(int(outcome)) if outcome.lstrip("-").isdigit() else pb.Outcome.Value(outcome),
        labels=orjson.loads(row["labels"]),
    )
    record.start_time.FromMicroseconds(row["start_time"])
    record.latency.FromNanoseconds(round(row["latency_ms"] * 1e6))
    if row["ttft_ms"] is not None:
        record.time_to_first_token.FromNanoseconds(round(row["ttft_ms"] * 1e6))
    return record
