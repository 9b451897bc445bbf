"""`AdminService` over grpc.aio: a thin adapter to the engine's `list_backends` and the process's config reload
(`gateway.call.ConfigControl`), errors mapped like GatewayService's."""

from __future__ import annotations

import grpc

from gateway.call import CallContext, ConfigControl, Engine
from gateway.engine.methods import Method
from gateway.engine.servicer import context_of, unary_rpc
from gateway.errors import PermissionDeniedError
from tollgate.gateway.v1 import admin_pb2, admin_pb2_grpc

ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """The engine's admin calls, served."""

    def __init__(self, engine: Engine, control: ConfigControl | None = None) -> None:
        self._engine = engine
        self._control = control
        self._list = Method(admin_pb2.ListBackendsRequest, unary=lambda _, ctx: engine.list_backends(ctx))
        self._reloading = Method(admin_pb2.ReloadRequest, unary=lambda _, ctx: self._reload(ctx))

    async def ListBackends(  # the gRPC method name is fixed by the proto
        self, request: admin_pb2.ListBackendsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> admin_pb2.ListBackendsResponse:
        return await unary_rpc(context, context_of(context), self._list, request)

    async def Reload(  # the gRPC method name is fixed by the proto
        self, request: admin_pb2.ReloadRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> admin_pb2.ReloadResponse:
        return await unary_rpc(context, context_of(context), self._reloading, request)

    async def _reload(self, ctx: CallContext) -> admin_pb2.ReloadResponse:
        if self._control is None:  # an engine served without a reloader (embedded in a test); `tollgate` has one
            raise PermissionDeniedError("This engine has no configuration to reload", code="reload_unavailable")
        return await self._control.reload(ctx)
