"""`tollgate`: run the gateway in one process, or the engine and the front door apart.

    tollgate serve [--config FILE]                       front door + engine in one process (plus the engine's gRPC)
    tollgate engine [--config FILE]                      the routing engine alone, on gRPC
    tollgate frontdoor --engine HOST:PORT [--config FILE]  the front door alone, calling a remote engine
    tollgate check-config [--config FILE]                 validate a config file and exit

With no --config (and no TOLLGATE_CONFIG), the embedded default runs: a demo backend that needs no API key.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.engine.core import EngineCore
from gateway.engine.remote import RemoteEngine
from gateway.engine.server import start_engine_server
from gateway.frontdoor.app import create_app, start_http_server

log = logging.getLogger("tollgate")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollgate", description="An LLM gateway.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "front door and engine in one process"),
        ("engine", "the routing engine alone, serving gRPC"),
        ("frontdoor", "the HTTP front door alone, calling a remote engine"),
        ("check-config", "validate a configuration and exit"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", default=os.environ.get("TOLLGATE_CONFIG"), help="YAML file (default: embedded)")
        if name in ("serve", "frontdoor"):
            cmd.add_argument("--http", help="override listen.http (host:port)")
        if name in ("serve", "engine"):
            cmd.add_argument("--grpc", help="override listen.grpc (host:port)")
        if name == "frontdoor":
            cmd.add_argument("--engine", required=True, help="the engine's gRPC address, host:port")
        cmd.add_argument("--log-level", default=os.environ.get("TOLLGATE_LOG_LEVEL", "INFO"))
    return parser


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")


def _announce(config: GatewayConfig) -> None:
    if config.auth is None:
        log.warning("auth: none: every caller may use every model (for local use only)")
    for name in config.disabled:
        log.info("backend %s is disabled", name)
    log.info("models: %s", ", ".join(m.name for m in config.models))


async def _serve(config: GatewayConfig, engine: EngineCore, http: str, grpc_address: str) -> None:
    grpc_server = await start_engine_server(engine, grpc_address) if grpc_address else None
    http_server = await start_http_server(create_app(engine, config.server), http, config.server.shutdown_grace)
    _announce(config)
    log.info("http listening on %s:%d", http.rpartition(":")[0], http_server.port)
    if grpc_server:
        log.info("grpc listening on %s:%d", grpc_address.rpartition(":")[0], grpc_server.port)
    try:
        await _until_stopped()
    finally:
        if grpc_server:
            await grpc_server.stop(config.server.shutdown_grace)
        await http_server.stop()
        await engine.close()


async def _engine(config: GatewayConfig, engine: EngineCore, grpc_address: str) -> None:
    server = await start_engine_server(engine, grpc_address)
    _announce(config)
    log.info("grpc listening on %s:%d", grpc_address.rpartition(":")[0], server.port)
    try:
        await _until_stopped()
    finally:
        await server.stop(config.server.shutdown_grace)
        await engine.close()


async def _frontdoor(config: GatewayConfig, http: str, engine_address: str) -> None:
    engine = RemoteEngine(engine_address)
    server = await start_http_server(create_app(engine, config.server), http, config.server.shutdown_grace)
    log.info("http listening on %s:%d (engine at %s)", http.rpartition(":")[0], server.port, engine_address)
    try:
        await _until_stopped()
    finally:
        await server.stop()
        await engine.close()


def _run(main: Callable[[], Awaitable[None]]) -> None:
    try:
        import uvloop  # noqa: PLC0415  # optional: a faster event loop where it is installed

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())  # type: ignore[arg-type]  # Runner.run accepts any awaitable coroutine


def main(argv: Sequence[str] | None = None) -> int:
    """The command line entry point."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, os.environ)
        # Building the engine builds every provider: an unknown type or a bad option fails here, before listening.
        engine = EngineCore.from_config(config) if args.command != "frontdoor" else None
    except ConfigError as exc:
        print(f"tollgate: bad configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"ok: {len(config.backends)} backends, {len(config.models)} models")
        return 0
    http = getattr(args, "http", None) or config.listen.http
    grpc_address = getattr(args, "grpc", None) or config.listen.grpc
    try:
        if engine is not None and args.command == "serve":
            _run(lambda: _serve(config, engine, http, grpc_address))
        elif engine is not None:
            _run(lambda: _engine(config, engine, grpc_address))
        else:
            _run(lambda: _frontdoor(config, http, args.engine))
    except OSError as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
