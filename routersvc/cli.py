"""`tollgate routersvc`: the reference classifier server.

    tollgate routersvc --examples FILE --embeddings-url URL --embedding-model NAME
                       [--api-key-env VAR] [--listen 127.0.0.1:50071]

SIGINT or SIGTERM stop it gracefully.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from gateway.config import ConfigError
from gateway.process import catch_stop_signals, run, until_stopped
from routersvc.examples import load_examples

log = logging.getLogger("tollgate.routersvc")
_SHUTDOWN_GRACE = 5.0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `routersvc`; it sets `run=handler(args) -> int` as its default."""
    serve = sub.add_parser("routersvc", help="the reference classifier server: nearest examples by embedding")
    serve.add_argument("--examples", required=True, metavar="FILE", help="YAML: threshold, choices: {name: [...]}")
    serve.add_argument("--embeddings-url", required=True, metavar="URL", help="an OpenAI-compatible API base URL")
    serve.add_argument("--embedding-model", required=True, metavar="NAME")
    serve.add_argument("--api-key-env", default="", metavar="VAR", help="the environment variable holding its key")
    serve.add_argument("--listen", default="127.0.0.1:50071", metavar="HOST:PORT", help="gRPC address")
    serve.add_argument("--log-level", default=os.environ.get("TOLLGATE_LOG_LEVEL", "INFO"))
    serve.set_defaults(run=_run_server)


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen: expected host:port, got {address!r}")


def _run_server(args: argparse.Namespace) -> int:
    try:
        _check_address(args.listen)
        examples = load_examples(args.examples)
    except ConfigError as exc:
        print(f"tollgate routersvc: {exc}", file=sys.stderr)
        return 2
    # Here, not at the top: every `tollgate` command loads this module, and the server loads numpy.
    from gateway.routing.decision import DecisionFailed  # noqa: PLC0415
    from routersvc.server import EmbeddingSource, start_router_server  # noqa: PLC0415

    key = os.environ.get(args.api_key_env, "") if args.api_key_env else ""
    source = EmbeddingSource(args.embeddings_url, args.embedding_model, key)

    async def serve() -> None:
        stop = catch_stop_signals()  # before starting: the examples may take a while to embed
        server = await start_router_server(examples, source, args.listen)
        log.info("%d examples of %d choices", len(server.index), len(examples.choices))
        log.info("router listening on %s:%d", args.listen.rpartition(":")[0], server.port)
        try:
            await until_stopped(stop)
        finally:
            await server.stop(_SHUTDOWN_GRACE)

    try:
        run(serve)
    except DecisionFailed as exc:
        print(f"tollgate routersvc: the examples could not be embedded: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"tollgate routersvc: {exc}", file=sys.stderr)
        return 1
    return 0
