"""The engine's gRPC server: `GatewayService`, `grpc.health.v1` and server reflection on one port."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # grpc-stubs predates the aio API
from grpc_reflection.v1alpha import reflection

from gateway.engine.core import EngineCore
from gateway.engine.servicer import GatewayServicer
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name


class EngineServer:
    """A started gRPC server; `stop` enters graceful shutdown (health NOT_SERVING, then drain)."""

    def __init__(self, server: grpc.aio.Server, health_servicer: health_aio.HealthServicer, port: int) -> None:
        self.server = server
        self.port = port
        self._health = health_servicer

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, let in-flight calls finish for up to `grace` seconds, then stop."""
        await self._health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_engine_server(engine: EngineCore, address: str) -> EngineServer:
    """Serve `engine` on `address` (`host:port`, port 0 for any free port)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)])
    pb_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(engine), server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address} for gRPC")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return EngineServer(server, health_servicer, port)
