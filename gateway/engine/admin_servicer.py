"""`AdminService` over grpc.aio: a thin adapter to the engine's `list_backends`, errors mapped like GatewayService's."""

from __future__ import annotations

import grpc

from gateway.call import Engine
from gateway.engine.servicer import _unary, context_of
from tollgate.gateway.v1 import admin_pb2, admin_pb2_grpc

ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """The engine's admin calls, served."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def ListBackends(  # the gRPC method name is fixed by the proto
        self, request: admin_pb2.ListBackendsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> admin_pb2.ListBackendsResponse:
        return await _unary(context, context_of(context), self._engine.list_backends)
