"""One way to serve gRPC: the given services plus `grpc.health.v1` and server reflection, on one port.

The engine, the reference auth server and the reference stats server all start here, so each of them answers
grpcurl and Kubernetes health probes the same way and shuts down the same way. The server is tollgate's own
(`gateway.wire_server`: gRPC's protocol spoken from the event loop), hosting the grpc.aio servicers as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # grpc-stubs predates the aio API
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer  # reflection.aio's, which mypy cannot see

from gateway.config.tls import ServerTLS
from gateway.drain import Drain
from gateway.grpc_guard import GuardInterceptor
from gateway.tls import grpc_server_context
from gateway.wire_server import WireServer

# A service's full name, and the function that adds its servicer to a server (a generated `add_*_to_server`).
Service = tuple[str, Callable[[Any], None]]


class GrpcServer:
    """A started gRPC server; `stop` enters graceful shutdown (health NOT_SERVING, then drain)."""

    def __init__(self, server: WireServer, health_servicer: health_aio.HealthServicer, port: int) -> None:
        self.server = server
        self.port = port
        self._health = health_servicer

    async def drain(self) -> None:
        """Report NOT_SERVING for every service, and keep serving (the first step of a shutdown)."""
        await self._health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, stop accepting calls, let those in flight finish for up to `grace` seconds, then stop."""
        await self._health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_grpc_server(
    address: str,
    services: Sequence[Service],
    *,
    reuse_port: bool = False,
    drain: Drain | None = None,
    tls: ServerTLS | None = None,
) -> GrpcServer:
    """Serve `services` on `address` (`host:port`, port 0 for any free port), with health and reflection.

    Without `reuse_port` a port already taken is an error, as it should be; with it, processes share the port.
    Undecodable requests get INVALID_ARGUMENT; with a `drain`, calls are tracked for a bounded shutdown
    (`gateway.grpc_guard`). With `tls` the port speaks only TLS (mutual when it names a client CA), its certificate
    following the files.
    """
    server = WireServer(interceptors=[GuardInterceptor(drain)])
    for _, add in services:
        add(server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [name for name, _ in services]
    reflecting = ReflectionServicer((*names, health.SERVICE_NAME, reflection.SERVICE_NAME))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflecting, server)
    context = grpc_server_context(tls) if tls is not None else None
    port = await server.start(address, tls=context, reuse_port=reuse_port)
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcServer(server, health_servicer, port)
