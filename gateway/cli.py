"""`tollgate`: run the gateway in one process, or the engine and the front door apart.

    tollgate serve [--config FILE]                       front door + engine in one process (plus the engine's gRPC)
    tollgate engine [--config FILE]                      the routing engine alone, on gRPC
    tollgate frontdoor --engine HOST:PORT [--config FILE]  the front door alone, calling a remote engine
    tollgate check-config [--config FILE]                 validate a config file and exit

With no --config (and no TOLLGATE_CONFIG), the embedded default runs: a demo backend that needs no API key.
The listen addresses can be set without a file: `--http` / `--grpc`, or TOLLGATE_HTTP / TOLLGATE_GRPC (a flag wins
over the variable, the variable over the file). `tollgate --version` prints the installed version.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import TYPE_CHECKING

from authsvc.cli import add_commands as add_auth_commands
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.config.digest import config_hash
from gateway.config.fields import _address as parse_address
from gateway.config.telemetry import LogsConfig
from gateway.drain import Drain
from gateway.engine.remote import RemoteEngine
from gateway.engine.server import start_engine_server
from gateway.frontdoor.app import create_app, start_http_server
from gateway.lifecycle import serve_until_stopped
from gateway.process import catch_stop_signals, run
from gateway.telemetry.build import build_telemetry, config_secrets
from gateway.telemetry.frontdoor import watch_connections
from gateway.telemetry.http import metrics_app
from gateway.telemetry.logs import configure_logging
from gateway.telemetry.multiproc import shared_metrics_dir
from gateway.workers import Supervisor, caveats, refusal, reserve, worker_argv
from routersvc.cli import add_commands as add_router_commands
from statssvc.cli import add_commands as add_stats_commands

if TYPE_CHECKING:
    from gateway.assemble import Assembly
    from gateway.reload import Reloader

log = logging.getLogger("tollgate")


def _version() -> str:
    try:
        return metadata.version("tollgate")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _listen_address(env: str) -> Callable[[str], str]:
    """An argparse type for a listen address: `host:port`, or a usage error naming the flag and its variable."""

    def check(value: str) -> str:
        try:
            return parse_address(value, env)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollgate", description="An LLM gateway.")
    parser.add_argument("--version", action="version", version=f"tollgate {_version()}")
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
            http = os.environ.get("TOLLGATE_HTTP")
            cmd.add_argument(
                "--http",
                default=http,
                type=_listen_address("TOLLGATE_HTTP"),
                help="override listen.http, host:port (env TOLLGATE_HTTP)",
            )
        if name in ("serve", "engine"):
            grpc = os.environ.get("TOLLGATE_GRPC")
            cmd.add_argument(
                "--grpc",
                default=grpc,
                type=_listen_address("TOLLGATE_GRPC"),
                help="override listen.grpc, host:port (env TOLLGATE_GRPC)",
            )
        if name == "serve":
            cmd.add_argument("--workers", type=int, default=1, help="processes sharing the ports (default 1)")
            cmd.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --workers N
        if name == "frontdoor":
            cmd.add_argument("--engine", required=True, help="the engine's gRPC address, host:port")
        cmd.add_argument("--log-level", default=os.environ.get("TOLLGATE_LOG_LEVEL", "INFO"))
    add_auth_commands(sub)
    add_stats_commands(sub)
    add_router_commands(sub)
    return parser


def _announce(config: GatewayConfig) -> None:
    if config.auth is None:
        log.warning("auth: none: every caller may use every model (for local use only)")
    else:
        log.info(
            "auth: %s (decisions cached %gs, fail closed after %gs)",
            config.auth.server,
            config.auth.cache_ttl,
            config.auth.timeout,
        )
    if config.stats is None:
        log.info("stats: no stats server configured; usage is not reported")
    else:
        log.info("stats: usage reported to %s (spool in %s)", config.stats.server, config.stats.spool_dir)
    for name in config.disabled:
        log.info("backend %s is disabled", name)
    log.info("models: %s", ", ".join(m.name for m in config.models))


async def _serve(config: GatewayConfig, reloader: Reloader, http: str, grpc_address: str, shared: bool) -> None:
    stop = catch_stop_signals()  # before starting: a SIGTERM while starting stops the gateway once it is up
    assembly = reloader.assembly
    engine = reloader.engine
    await assembly.start()
    reloader.start()
    drain = Drain()
    grpc_server = (
        await start_engine_server(
            engine,
            grpc_address,
            reuse_port=shared,
            drain=drain,
            tls=config.tls.grpc,
            front_doors=config.listen.front_doors,
            control=reloader,
        )
        if grpc_address
        else None
    )
    app = create_app(engine, config.server, assembly.telemetry, reloader)
    http_server = await start_http_server(app, http, config.server, reuse_port=shared, drain=drain, tls=config.tls.http)
    watch_connections(assembly.telemetry, http_server.connections.closed)
    _announce(config)
    log.info("http listening on %s:%d (config %s)", http.rpartition(":")[0], http_server.port, assembly.hash)
    if grpc_server:
        log.info("grpc listening on %s:%d", grpc_address.rpartition(":")[0], grpc_server.port)
    watchdog_off = _nothing
    try:
        watchdog_off = await serve_until_stopped(config.server, stop, drain, http=http_server, grpc_server=grpc_server)
    finally:
        await http_server.close()
        if grpc_server:
            await grpc_server.stop(0)
        await reloader.close()
        watchdog_off()


async def _engine(config: GatewayConfig, reloader: Reloader, grpc_address: str) -> None:
    stop = catch_stop_signals()  # before starting, as in _serve
    assembly = reloader.assembly
    await assembly.start()
    reloader.start()
    drain = Drain()
    server = await start_engine_server(
        reloader.engine,
        grpc_address,
        drain=drain,
        tls=config.tls.grpc,
        front_doors=config.listen.front_doors,
        control=reloader,
    )
    _announce(config)
    log.info("grpc listening on %s:%d (config %s)", grpc_address.rpartition(":")[0], server.port, assembly.hash)
    metrics = assembly.telemetry.metrics
    listen = config.telemetry.metrics.listen
    # The engine has no front door: its /metrics gets a listener of its own when one is configured.
    metrics_server = await start_http_server(metrics_app(metrics), listen) if metrics and listen else None
    if metrics_server is not None:
        log.info("metrics on http://%s:%d/metrics", listen.rpartition(":")[0], metrics_server.port)
    watchdog_off = _nothing
    try:
        watchdog_off = await serve_until_stopped(config.server, stop, drain, grpc_server=server)
    finally:
        await server.stop(0)
        if metrics_server is not None:
            await metrics_server.close()
        await reloader.close()
        watchdog_off()


async def _frontdoor(config: GatewayConfig, http: str, engine_address: str) -> None:
    stop = catch_stop_signals()  # before starting, as in _serve
    engine = RemoteEngine.for_config(engine_address, config)
    telemetry = build_telemetry(config)  # no engine parts to read
    # Its own settings apply at start; an admin reload through it reloads the engine's config.
    app = create_app(engine, config.server, telemetry, engine)
    drain = Drain()
    server = await start_http_server(app, http, config.server, drain=drain, tls=config.tls.http)
    watch_connections(telemetry, server.connections.closed)
    log.info("http listening on %s:%d (engine at %s)", http.rpartition(":")[0], server.port, engine_address)
    watchdog_off = _nothing
    try:
        watchdog_off = await serve_until_stopped(config.server, stop, drain, http=server, engine_cut=engine.cut_calls)
    finally:
        await server.close()
        await engine.close()
        telemetry.close()
        watchdog_off()


def _nothing() -> None:
    pass


def _supervise(args: argparse.Namespace, config: GatewayConfig, http: str, grpc_address: str) -> int:
    problem = refusal(config, args.workers)
    if problem is not None:
        print(f"tollgate: {problem}", file=sys.stderr)
        return 2
    for caveat in caveats(config, args.workers):
        log.warning(caveat)
    try:
        # Held (bound, never listening) while the workers run, so that port 0 means one port for all of them.
        http_socket, http = reserve(http)
        grpc_socket, grpc_address = reserve(grpc_address)
    except OSError as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 1
    with http_socket, grpc_socket, shared_metrics_dir(config) as metrics_dir:
        level = args.log_level.upper()
        argv = worker_argv(args.config, http, grpc_address, level)
        if metrics_dir:
            log.info("workers share their metrics through %s", metrics_dir)
        return Supervisor(argv, args.workers, metrics_dir=metrics_dir).run()


def _signal_supervisor() -> None:
    """A worker's admin reload: the supervisor passes SIGHUP on to every worker (this one finds nothing new)."""
    os.kill(os.getppid(), signal.SIGHUP)


def _assemble(config: GatewayConfig) -> Assembly:
    # Imported here: `tollgate frontdoor` (split mode) must not load the engine and every part it is built from.
    from gateway.assemble import assemble  # noqa: PLC0415

    return assemble(config)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line entry point."""
    args = _parser().parse_args(argv)
    level = getattr(args, "log_level", None) or os.environ.get("TOLLGATE_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = getattr(args, "run", None)
    if handler is not None:  # a command of the auth or stats packages: masked logs too (authsvc sees raw keys)
        configure_logging(LogsConfig(), level)
        return int(handler(args))
    if args.command in ("serve", "engine", "frontdoor"):
        # SIGHUP means "reload" (gateway.reload), never the default "exit": ignored until the reloader listens, and
        # by a split front door, whose settings all apply at start.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        config = load_config(args.config, os.environ)
        masking = configure_logging(config.telemetry.logs, level, config_secrets(config))
        # Building the engine builds every provider: an unknown type or a bad option fails here, before listening.
        assembly = _assemble(config) if args.command != "frontdoor" else None
    except ConfigError as exc:
        print(f"tollgate: bad configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        # The hash a running gateway shows in /readyz once it serves this file (gateway.config.digest).
        print(f"ok: {len(config.backends)} backends, {len(config.models)} models, config {config_hash(config)}")
        return 0
    http = getattr(args, "http", None) or config.listen.http
    grpc_address = getattr(args, "grpc", None) or config.listen.grpc
    workers = getattr(args, "workers", 1)
    if args.command == "serve" and workers > 1:
        return _supervise(args, config, http, grpc_address)

    def reloader(assembly: Assembly, worker: bool = False) -> Reloader:
        from gateway.reload import Reloader  # noqa: PLC0415  # like assemble: never loaded by `tollgate frontdoor`

        notify = _signal_supervisor if worker else None
        return Reloader(assembly, args.config, os.environ, notify=notify, secrets=masking.redactor.add_secrets)

    try:
        if assembly is not None and args.command == "serve":
            run(lambda: _serve(config, reloader(assembly, args.worker), http, grpc_address, shared=args.worker))
        elif assembly is not None:
            run(lambda: _engine(config, reloader(assembly), grpc_address))
        else:
            run(lambda: _frontdoor(config, http, args.engine))
    except OSError as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
