"""Command-line entry points (registered on the `tollgate` command).

    tollgate authsvc --keys FILE [--listen 127.0.0.1:50061] [--cache-ttl 30s] [--reload-interval 2s]
                     [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
    tollgate keys add|list|revoke --file FILE ...     (see authsvc/keys_cli.py)

The server re-reads its key file when the file changes and on SIGHUP; SIGINT or SIGTERM stop it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from authsvc.keyfile import KeyFileError
from authsvc.keys_cli import add_key_commands
from gateway.config import ConfigError, parse_duration
from gateway.config.tls import ServerTLS
from gateway.process import catch_stop_signals, run, until_stopped
from gateway.tls import add_server_flags, server_tls_from_flags

log = logging.getLogger("tollgate.authsvc")
_SHUTDOWN_GRACE = 5.0  # a Check is a dictionary lookup and a hash: in-flight calls finish in far less


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands; each sets `run=handler(args) -> int` as its default."""
    serve = sub.add_parser("authsvc", help="the reference auth server: API keys from a file")
    serve.add_argument("--keys", required=True, metavar="FILE", help="the YAML key file (see `tollgate keys add`)")
    serve.add_argument("--listen", default="127.0.0.1:50061", metavar="HOST:PORT", help="gRPC address")
    serve.add_argument("--cache-ttl", default="30s", help="how long the gateway may reuse a decision (default 30s)")
    serve.add_argument("--reload-interval", default="2s", help="how often to check the key file for changes")
    add_server_flags(serve)
    serve.add_argument("--log-level", default=os.environ.get("TOLLGATE_LOG_LEVEL", "INFO"))
    serve.set_defaults(run=_run_server)
    add_key_commands(sub)


def _run_server(args: argparse.Namespace) -> int:
    try:
        cache_ttl = parse_duration(args.cache_ttl, "--cache-ttl")
        reload_interval = parse_duration(args.reload_interval, "--reload-interval")
        _check_address(args.listen)
        tls = server_tls_from_flags(args)
    except (ConfigError, ValueError) as exc:  # ConfigError is a ValueError; named for the reader
        print(f"tollgate authsvc: {exc}", file=sys.stderr)
        return 2
    try:
        run(lambda: _serve(args.keys, args.listen, cache_ttl, reload_interval, tls))
    except FileNotFoundError:
        print(f"tollgate authsvc: {args.keys}: no such key file (`tollgate keys add` makes one)", file=sys.stderr)
        return 2
    except KeyFileError as exc:
        print(f"tollgate authsvc: {args.keys}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tollgate authsvc: {exc}", file=sys.stderr)
        return 1
    return 0


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen: expected host:port, got {address!r}")


async def _serve(keys_path: str, address: str, cache_ttl: float, reload_interval: float, tls: ServerTLS | None) -> None:
    # Imported here: every `tollgate` command registers this one, and a gateway does not need the server.
    from authsvc.server import start_auth_server  # noqa: PLC0415

    stop = catch_stop_signals()  # before starting: a SIGTERM while the keys load stops the server once it is up
    server = await start_auth_server(keys_path, address, cache_ttl=cache_ttl, reload_interval=reload_interval, tls=tls)
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()  # held so that a running reload is not garbage-collected

    def on_hangup() -> None:
        task = loop.create_task(server.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)  # before announcing: a SIGHUP must never kill the server
    log.info("%d keys from %s", len(server.store.keys.keys), keys_path)
    log.info("auth listening on %s:%d", address.rpartition(":")[0], server.port)
    try:
        await until_stopped(stop)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await server.stop(_SHUTDOWN_GRACE)
