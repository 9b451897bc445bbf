"""The engine's gRPC server: `GatewayService`, `AdminService`, `grpc.health.v1` and server reflection on one port."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.call import ConfigControl, Engine
from gateway.config.tls import ServerTLS
from gateway.drain import Drain
from gateway.engine.admin_servicer import ADMIN_SERVICE_NAME, AdminServicer
from gateway.engine.servicer import GatewayServicer
from gateway.engine.wire import front_door_networks
from gateway.grpc_server import GrpcServer, start_grpc_server
from tollgate.gateway.v1 import admin_pb2_grpc
from tollgate.gateway.v1 import gateway_pb2 as pb
from tollgate.gateway.v1 import gateway_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name


async def start_engine_server(  # noqa: PLR0913 (each option from its own part of the config)
    engine: Engine,
    address: str,
    *,
    reuse_port: bool = False,
    drain: Drain | None = None,
    tls: ServerTLS | None = None,
    front_doors: Sequence[str] = (),
    control: ConfigControl | None = None,
) -> GrpcServer:
    """Serve `engine` on `address` (`host:port`, port 0 for any free port); `reuse_port` to share it with workers;
    `drain` to track calls for a bounded shutdown (and the calls a front door cuts at its own shutdown); `tls` for
    TLS (mutual when it names a client CA); `front_doors` the networks whose `tollgate-client-address` is believed
    (`listen.front_doors`; none: any caller's); `control` for the admin reload."""
    servicer = GatewayServicer(engine, front_door_networks(front_doors), drain)
    admin = AdminServicer(engine, control)
    return await start_grpc_server(
        address,
        [
            (SERVICE_NAME, lambda server: pb_grpc.add_GatewayServiceServicer_to_server(servicer, server)),
            (ADMIN_SERVICE_NAME, lambda server: admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)),
        ],
        reuse_port=reuse_port,
        drain=drain,
        tls=tls,
    )
