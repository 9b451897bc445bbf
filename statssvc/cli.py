"""Command-line entry points (registered on the `tollgate` command).

tollgate statssvc [--db FILE] [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
                                                      run the reference stats server
tollgate stats usage [--server HOST:PORT] [--by model,user] [--since 24h] [--bucket 1h] [--json] ...
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import UTC, datetime

import grpc

from gateway.config import ConfigError, parse_duration
from gateway.config.tls import ClientTLS, ServerTLS
from gateway.process import catch_stop_signals, run, until_stopped
from gateway.tls import (
    add_client_flags,
    add_server_flags,
    client_tls_from_flags,
    grpc_channel_credentials,
    server_tls_from_flags,
)
from statssvc.render import DIMENSIONS, table, to_json
from tollgate.stats.v1 import stats_pb2 as pb
from tollgate.stats.v1 import stats_pb2_grpc as pb_grpc

log = logging.getLogger("tollgate.stats")

DEFAULT_DB = "tollgate-usage.db"
DEFAULT_ADDRESS = "127.0.0.1:50062"
SHUTDOWN_GRACE = 5.0  # seconds for in-flight Report calls to finish on SIGTERM
QUERY_DEADLINE = 10.0


class UsageError(ValueError):
    """A flag of `tollgate stats usage` that cannot be used; the message names it."""


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands; each sets `run=handler(args) -> int` as its default."""
    serve = sub.add_parser("statssvc", help="run the reference stats server (tollgate.stats.v1) on a SQLite file")
    serve.add_argument("--db", default=DEFAULT_DB, help=f"the SQLite file, created if missing (default: {DEFAULT_DB})")
    serve.add_argument("--listen", default=DEFAULT_ADDRESS, help=f"host:port for gRPC (default: {DEFAULT_ADDRESS})")
    add_server_flags(serve)
    serve.add_argument("--log-level", default=os.environ.get("TOLLGATE_LOG_LEVEL", "INFO"))
    serve.set_defaults(run=run_server)

    stats = sub.add_parser("stats", help="ask a stats server about usage")
    stats_sub = stats.add_subparsers(dest="stats_command", required=True)
    usage = stats_sub.add_parser("usage", help="requests, tokens and cost, grouped and filtered")
    usage.add_argument("--server", default=DEFAULT_ADDRESS, help=f"the stats server (default: {DEFAULT_ADDRESS})")
    usage.add_argument("--by", default="", help=f"group by these, comma-separated: {', '.join(DIMENSIONS)}")
    usage.add_argument("--since", help="a duration before now (24h, 30m, 7d) or a time (2026-11-01T00:00:00Z)")
    usage.add_argument("--until", help="the end of the window, as --since (default: now)")
    usage.add_argument("--key", default="", help="only this key id")
    usage.add_argument("--user", default="", help="only this user")
    usage.add_argument("--team", default="", help="only this team")
    usage.add_argument("--model", default="", help="only this requested model")
    usage.add_argument("--bucket", help="also split into time buckets of this width (1h, 15m)")
    add_client_flags(usage)
    usage.add_argument("--json", action="store_true", help="print JSON instead of a table")
    usage.set_defaults(run=run_usage)


# `tollgate statssvc`


async def _serve(db: str, address: str, tls: ServerTLS | None) -> None:
    # Imported here, like sqlite3 below: every `tollgate` command registers this one, and a gateway needs neither.
    from statssvc.server import start_stats_server  # noqa: PLC0415

    stop = catch_stop_signals()  # before starting: a SIGTERM while the database opens stops the server once it is up
    server = await start_stats_server(db, address, tls=tls)
    log.info("stats listening on %s:%d (database %s)", address.rpartition(":")[0], server.port, db)
    try:
        await until_stopped(stop)
    finally:
        await server.stop(SHUTDOWN_GRACE)


def run_server(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 1 when the port or the database cannot be used."""
    import sqlite3  # noqa: PLC0415 - see _serve

    from statssvc.schema import SchemaError  # noqa: PLC0415

    try:
        tls = server_tls_from_flags(args)
    except ValueError as exc:
        print(f"tollgate statssvc: {exc}", file=sys.stderr)
        return 2
    try:
        run(lambda: _serve(args.db, args.listen, tls))
    except (OSError, RuntimeError) as exc:  # grpc reports a port it cannot bind as RuntimeError
        print(f"tollgate statssvc: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, SchemaError) as exc:
        print(f"tollgate statssvc: {args.db}: {exc}", file=sys.stderr)
        return 1
    return 0


# `tollgate stats usage`


def _when(value: str, now: float, flag: str) -> float:
    """Seconds since the epoch from `24h`/`7d` (before `now`) or an ISO 8601 time (UTC unless it says otherwise)."""
    text = value.strip()
    try:
        if "-" in text or "T" in text or ":" in text:
            moment = datetime.fromisoformat(text)
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        if text.endswith("d"):  # days are not a config duration; they are the usual window of a usage report
            return now - parse_duration(f"{text[:-1]}h", flag) * 24
        return now - parse_duration(text, flag)
    except (ValueError, ConfigError):
        raise UsageError(
            f"{flag}: expected a duration before now (30m, 24h, 7d) or a time (2026-11-01T00:00:00Z), got {value!r}"
        ) from None


def _group_by(value: str) -> list[str]:
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    for name in names:
        if name not in DIMENSIONS:
            raise UsageError(f"--by: unknown dimension {name!r} (choose from {', '.join(DIMENSIONS)})")
    if len(set(names)) != len(names):
        raise UsageError(f"--by: a dimension is named twice in {value!r}")
    return names


def usage_request(args: argparse.Namespace, now: float) -> pb.QueryUsageRequest:
    """The QueryUsageRequest the flags ask for; raises UsageError naming a bad flag."""
    request = pb.QueryUsageRequest(
        key_id=args.key,
        user=args.user,
        team=args.team,
        model=args.model,
        group_by=[DIMENSIONS[n] for n in _group_by(args.by)],
    )
    since = _when(args.since, now, "--since") if args.since else None
    until = _when(args.until, now, "--until") if args.until else None
    if since is not None and until is not None and until < since:
        raise UsageError("--until: must not be before --since")
    if since is not None:
        request.start_time.FromMicroseconds(int(since * 1_000_000))
    if until is not None:
        request.end_time.FromMicroseconds(int(until * 1_000_000))
    if args.bucket:
        try:
            width = parse_duration(args.bucket, "--bucket")
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        if width < 1:
            raise UsageError("--bucket: must be at least 1s")
        request.bucket.FromMicroseconds(int(width * 1_000_000))
    return request


def _rpc_failure(exc: grpc.Call, server: str) -> int:
    code = exc.code()
    details = " ".join((exc.details() or "").split())  # one line, whatever the server sent
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        print(f"tollgate stats usage: the server refused the query: {details}", file=sys.stderr)
        return 2
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"cannot reach the stats server at {server}"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"the stats server at {server} did not answer within {QUERY_DEADLINE:g}s"
    else:
        message = f"the stats server at {server} answered {code.name}: {details}"
    print(f"tollgate stats usage: {message}", file=sys.stderr)
    return 1


def _channel(server: str, tls: ClientTLS | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(server)
    named = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.secure_channel(server, grpc_channel_credentials(tls), options=named)


def run_usage(args: argparse.Namespace) -> int:
    """Query the server and print the answer; 1 when it cannot be asked, 2 for a bad flag."""
    try:
        request = usage_request(args, time.time())
        tls = client_tls_from_flags(args)
    except ValueError as exc:  # a UsageError, or a --tls-* flag that cannot be used
        print(f"tollgate stats usage: {exc}", file=sys.stderr)
        return 2
    try:
        with _channel(args.server, tls) as channel:
            response = pb_grpc.StatsServiceStub(channel).QueryUsage(request, timeout=QUERY_DEADLINE)
    except grpc.RpcError as exc:
        return _rpc_failure(exc, args.server)  # type: ignore[arg-type]  # a failed sync call is also a grpc.Call
    dimensions = _group_by(args.by)
    render = to_json if args.json else table
    print(render(response, dimensions, bucketed=bool(args.bucket)))
    return 0
